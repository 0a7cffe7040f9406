//! HTTPS: certificates are verified; a server with an untrusted one gets
//! no request at all.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use support::*;

/// A TLS server on 127.0.0.1 with a self-signed certificate; counts the
/// bytes of HTTP it ever receives.
fn untrusted_tls_server() -> (u16, Arc<AtomicUsize>) {
    let cert = CertificateDer::from_pem_slice(include_bytes!("fixtures/self-signed.crt")).unwrap();
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("fixtures/self-signed.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(AtomicUsize::new(0));
    let seen = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, stream);
            let mut buf = [0u8; 4096];
            if let Ok(n) = tls.read(&mut buf) {
                seen.fetch_add(n, Ordering::SeqCst);
            }
        }
    });
    (port, received)
}

#[actix_rt::test]
async fn an_untrusted_certificate_fails_the_sync_before_any_request() {
    let (port, received) = untrusted_tls_server();
    let apis = Apis::start(FakeMailchimp::default(), FakeOmetria::default()).await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let mut config = apis.config(dir.path());
    config.mailchimp_base_url = format!("https://127.0.0.1:{port}/3.0");
    let (log, buffer) = capture_log();
    let summary = run_once(&config, log).await;
    assert_eq!(summary.failed, 1);
    assert_eq!(
        received.load(Ordering::SeqCst),
        0,
        "an HTTP request (and the key) crossed an untrusted TLS session"
    );
    let log = buffer.contents();
    assert!(
        log.contains("Mailchimp connection failed") && log.contains("certificate"),
        "{log}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), r#"[{"list_id": "L"}]"#);
}

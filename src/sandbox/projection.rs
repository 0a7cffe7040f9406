//! Mailchimp's `fields` / `exclude_fields` projection: comma-separated
//! paths with dots into sub-objects (through arrays, to each element).

use std::collections::BTreeMap;

use serde_json::Value;

/// Paths as a tree: `members.merge_fields.FNAME,total_items` →
/// `{members: {merge_fields: {FNAME: {}}}, total_items: {}}`. An empty
/// subtree means the whole value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldTree(pub BTreeMap<String, FieldTree>);

impl FieldTree {
    pub fn parse(list: &str) -> FieldTree {
        let mut tree = FieldTree::default();
        for path in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut node = &mut tree;
            for part in path.split('.') {
                node = node.0.entry(part.to_owned()).or_default();
            }
        }
        tree
    }

    pub fn is_whole(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&FieldTree> {
        self.0.get(name)
    }

    /// Keeps only the paths of the tree.
    pub fn keep(&self, value: &mut Value) {
        if self.is_whole() {
            return;
        }
        match value {
            Value::Object(map) => {
                map.retain(|k, _| self.0.contains_key(k));
                for (k, v) in map.iter_mut() {
                    self.0[k].keep(v);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.keep(v)),
            _ => {}
        }
    }

    /// Removes the paths of the tree.
    pub fn remove(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (k, sub) in &self.0 {
                    if sub.is_whole() {
                        map.shift_remove(k);
                    } else if let Some(v) = map.get_mut(k) {
                        sub.remove(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.remove(v)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page() -> Value {
        json!({"members": [
            {"email_address": "a@x", "merge_fields": {"FNAME": "A", "LNAME": "B"}, "stats": {"x": 1}},
            {"email_address": "c@x", "merge_fields": {"FNAME": "C", "LNAME": "D"}, "stats": {"x": 2}}],
            "total_items": 2, "_links": [{"rel": "self"}]})
    }

    #[test]
    fn keep_follows_dots_through_arrays() {
        let mut v = page();
        FieldTree::parse("members.merge_fields.FNAME, total_items,members.email_address").keep(&mut v);
        assert_eq!(
            v,
            json!({"members": [{"email_address": "a@x", "merge_fields": {"FNAME": "A"}},
                               {"email_address": "c@x", "merge_fields": {"FNAME": "C"}}], "total_items": 2})
        );
    }

    #[test]
    fn remove_follows_dots_through_arrays() {
        let mut v = page();
        FieldTree::parse("_links,members.stats,members.merge_fields.LNAME").remove(&mut v);
        assert_eq!(
            v,
            json!({"members": [{"email_address": "a@x", "merge_fields": {"FNAME": "A"}},
                               {"email_address": "c@x", "merge_fields": {"FNAME": "C"}}], "total_items": 2})
        );
    }

    #[test]
    fn an_empty_list_keeps_everything() {
        let mut v = page();
        FieldTree::parse("").keep(&mut v);
        assert_eq!(v, page());
    }
}

//! Prompt templates: `{{name}}` and `{{payload.a.b}}` filled from a firing's context.
//!
//! Strings render as themselves, arrays of strings one per line, other JSON values as
//! compact JSON. An unknown name renders empty and is reported to the caller, which logs it.

use serde_json::Value;

/// Renders `template` against the JSON object `vars`. Returns the text and the names that
/// were not found.
pub fn render(template: &str, vars: &Value) -> (String, Vec<String>) {
    let mut out = String::with_capacity(template.len());
    let mut unknown = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return (out, unknown);
        };
        let name = after[..end].trim();
        match lookup(vars, name) {
            Some(v) => out.push_str(&to_text(v)),
            None => unknown.push(name.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    (out, unknown)
}

/// Follows a dot path (`payload.pull_request.number`; array indexes as numbers).
pub fn lookup<'a>(vars: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return None;
    }
    let mut cur = vars;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// How a JSON value appears in rendered text.
pub fn to_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(a) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_names_paths_and_reports_unknown() {
        let vars = json!({"job_name": "j", "changed_files": ["a", "b"],
            "payload": {"pull_request": {"number": 7}, "list": [1, {"x": "y"}]}});
        let (s, u) = render(
            "{{job_name}}|{{ payload.pull_request.number }}|{{changed_files}}|{{payload.list.1.x}}|{{nope}}|{{payload}}",
            &vars,
        );
        assert_eq!(s, format!("j|7|a\nb|y||{}", vars["payload"]));
        assert_eq!(u, vec!["nope".to_string()]);
    }

    #[test]
    fn unterminated_braces_are_literal() {
        assert_eq!(render("a {{b", &json!({})).0, "a {{b");
        assert_eq!(render("}} {{}}", &json!({})).0, "}} ");
    }
}

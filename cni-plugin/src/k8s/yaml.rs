//! Kubeconfig text to a JSON value: JSON first (cheap, and valid YAML), then YAML.

use serde_json::Value;

pub fn parse(text: &str) -> Result<Value, String> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(v);
    }
    serde_yaml_ng::from_str::<Value>(text).map_err(|e| format!("not JSON or YAML: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn yaml_kubeconfig() {
        let y = "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: http://127.0.0.1:8080\ncurrent-context: c\n";
        let v = super::parse(y).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "http://127.0.0.1:8080"
        );
        assert_eq!(super::parse("{\"a\":1}").unwrap()["a"], 1);
        assert!(super::parse("a: [").is_err());
    }
}

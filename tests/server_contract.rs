//! The contract in `proto/` and the server must not drift: the router's
//! routes are exactly the OpenAPI paths and methods, and results carry
//! exactly the fields the WebSocket schema requires.

mod server_support;

use std::collections::BTreeSet;

use htm_stream::server::routes::ROUTES;
use serde_json::Value;
use server_support::{sine, TestServer};

fn proto(name: &str) -> String {
    std::fs::read_to_string(format!("{}/proto/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// (METHOD, path) pairs under `paths:` of the OpenAPI document. The file
/// keeps paths at two spaces and methods at four, which this relies on.
fn openapi_routes(yaml: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for line in yaml.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_paths = line.trim_end() == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            path = Some(format!("/{}", p.trim_end().trim_end_matches(':')));
        } else if let Some(rest) = line.strip_prefix("    ") {
            let key = rest.split(':').next().unwrap_or_default();
            if ["get", "put", "post", "delete", "patch"].contains(&key) {
                let p = path.clone().expect("method under a path");
                out.insert((key.to_uppercase(), p));
            }
        }
    }
    out
}

#[test]
fn router_routes_match_the_openapi_paths() {
    let spec = openapi_routes(&proto("openapi.yaml"));
    let code: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert!(spec.len() >= 10, "parsed too few routes: {spec:?}");
    let missing: Vec<_> = code.difference(&spec).collect();
    let extra: Vec<_> = spec.difference(&code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routes not in openapi.yaml: {missing:?}; in openapi.yaml but not routed: {extra:?}"
    );
}

#[tokio::test]
async fn every_listed_route_is_really_routed() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &[]).await;
    s.post("r", &sine(0)).await;
    for (method, path) in ROUTES {
        let url = s.url(&path.replace("{id}", "r"));
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = s.client.request(m, &url).send().await.unwrap();
        let body = r.text().await.unwrap_or_default();
        assert!(
            !body.contains("\"no_route\"") && !body.contains("method_not_allowed"),
            "{method} {path}: {body}"
        );
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn results_have_exactly_the_schema_fields() {
    let schema: Value = serde_json::from_str(&proto("ws-messages.schema.json")).unwrap();
    let required: BTreeSet<String> = schema["$defs"]["Result"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let props: BTreeSet<String> = schema["$defs"]["Result"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(required, props);
    let yaml = proto("openapi.yaml");
    for field in &required {
        assert!(
            yaml.contains(&format!("{field}:")),
            "openapi.yaml lacks {field}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &[]).await;
    let (_, r) = s.post("r", &sine(0)).await;
    let got: BTreeSet<String> = r.as_object().unwrap().keys().cloned().collect();
    assert_eq!(got, required);
    s.stop().await.unwrap();
}

//! The OpenAPI document served at `/openvidu/api/openapi.json` lists exactly the routes the
//! router serves: every `(method, path)` of `control::rest::routes()` is documented, nothing
//! else is, and the running server answers each documented method (not 405) and refuses an
//! undocumented one on the same path (405, which proves the path itself is routed).

mod common;

use std::collections::BTreeSet;

use reqwest::Method;
use ringsfu::control::rest::routes;
use ringsfu::ops::openapi::{OPENAPI_JSON, router_path_to_openapi};
use serde_json::Value;

fn documented() -> BTreeSet<(String, String)> {
    let doc: Value = serde_json::from_str(OPENAPI_JSON).expect("the document is JSON");
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.")), Some(true));
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            assert!(op["responses"].is_object(), "{method} {path} has no responses");
            out.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    out
}

fn served() -> BTreeSet<(String, String)> {
    routes().into_iter().map(|(m, p)| (m.to_string(), router_path_to_openapi(p))).collect()
}

#[test]
fn every_route_is_documented_and_nothing_else() {
    let doc = documented();
    let served = served();
    let undocumented: Vec<_> = served.difference(&doc).collect();
    let phantom: Vec<_> = doc.difference(&served).collect();
    assert!(undocumented.is_empty(), "routes missing from openapi.json: {undocumented:?}");
    assert!(phantom.is_empty(), "openapi.json documents routes the router lacks: {phantom:?}");
}

#[test]
fn every_operation_id_is_unique_and_refs_resolve() {
    let doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    let mut ids = BTreeSet::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
        }
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for r in OPENAPI_JSON.split("\"$ref\": \"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_server_answers_each_documented_route() {
    let s = common::start(|_| {}).await;
    let probe = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
    let concrete = |p: &str| {
        p.replace("{sessionId}", "nosuch")
            .replace("{connectionId}", "con_X")
            .replace("{streamId}", "str_X")
            .replace("{item}", "openvidu-version")
            .replace("{rest}", "start")
            .replace("{recordingId}", "rec1")
            .replace("{file}", "rec1.zip")
    };
    let doc = documented();
    let paths: BTreeSet<&String> = doc.iter().map(|(_, p)| p).collect();
    for path in paths {
        let url = concrete(path);
        for m in &probe {
            let listed = doc.contains(&(m.to_string(), path.clone()));
            let r = s.req(m.clone(), &url).body("{}").send().await.expect("request");
            let st = r.status().as_u16();
            if listed {
                assert_ne!(st, 405, "{m} {path} is documented but refused");
            } else {
                assert_eq!(st, 405, "{m} {path} is not documented but answered {st}");
            }
        }
    }
    // The document itself is served.
    let (st, v) = s.get("/openvidu/api/openapi.json").await;
    assert_eq!(st, 200);
    assert_eq!(v["info"]["version"], ringsfu::OPENVIDU_VERSION);
}

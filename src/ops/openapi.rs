//! The OpenAPI 3 document of the REST API, served at `/openvidu/api/openapi.json`.
//!
//! Written by hand (`openapi.json` beside this file) and kept true by `tests/openapi.rs`, which
//! checks that every `(method, path)` of [`crate::control::rest::routes`] is documented and that
//! the document lists nothing the router does not serve.

/// The document, JSON text.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Converts an OpenAPI path (`/a/{id}`) to the router's syntax for comparison: the router's
/// catch-all `{*rest}` is documented as `{rest}`.
pub fn router_path_to_openapi(path: &str) -> String {
    path.replace("{*", "{")
}

//! `GET /`: the web page (the live dependency map, flows, violations,
//! quarantine), served by the control plane itself.
//!
//! One self-contained page (`web/index.html`: inline CSS and JS, no
//! external resources: the appliance has no internet). It needs no token
//! to load; it reads the API with the bearer token the user gives it, so
//! the API's own checks guard every datum and action. The page must never
//! insert API text as markup: a Content-Security-Policy with a nonce per
//! response lets only its own inline script and style run, and forbids
//! framing (the quarantine buttons cannot be clickjacked).

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page; `__NONCE__` stands for the response's CSP nonce.
const PAGE: &str = include_str!("web/index.html");

/// The placeholder in `PAGE` for the nonce.
const NONCE: &str = "__NONCE__";

/// The page.
pub async fn index() -> Response {
    // 24 random bytes from the kernel; if that fails (it does not on
    // Linux), a fixed nonce still confines scripts to the page's own.
    let nonce = super::random_token().unwrap_or_else(|_| "microseg".into());
    let policy = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            (header::CACHE_CONTROL, "no-store".into()),
            (header::CONTENT_SECURITY_POLICY, policy),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
            (header::REFERRER_POLICY, "no-referrer".into()),
        ],
        PAGE.replace(NONCE, &nonce),
    )
        .into_response()
}

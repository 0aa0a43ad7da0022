//! The API over TLS: a self-signed certificate made with openssl, curl
//! trusting it gets answers, plain HTTP and an untrusting client get
//! nothing, and bad certificate files are refused with the field named.

mod common;

use std::process::Command;

use common::ScratchDir;

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_api_serves_https_with_the_configured_certificate() {
    let scratch = ScratchDir::new("tls");
    let (cert, key) = (scratch.file("cert.pem"), scratch.file("key.pem"));
    let (ca, ca_key) = (scratch.file("ca.pem"), scratch.file("ca.key"));
    let (csr, ext) = (scratch.file("leaf.csr"), scratch.file("ext.cnf"));
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").expect("write");
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    // A test CA, and a server certificate for 127.0.0.1 signed by it.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=microseg test CA",
        "-keyout",
        &path(&ca_key),
        "-out",
        &path(&ca),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &path(&key),
        "-out",
        &path(&csr),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path(&csr),
        "-CA",
        &path(&ca),
        "-CAkey",
        &path(&ca_key),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &path(&ext),
        "-out",
        &path(&cert),
    ]);
    let addr = common::api::serve_with(&scratch.file("state"), Some((&cert, &key)));
    let ca_path = path(&ca);
    let cacert = ca_path.as_str();

    let (ok, body) = curl(&["--cacert", cacert, &format!("https://{addr}/healthz")]);
    assert!(ok && body == "ok\n", "{body}");
    let auth = format!("Authorization: Bearer {}", common::api::TOKEN);
    let (ok, body) = curl(&[
        "--cacert",
        cacert,
        "-H",
        &auth,
        &format!("https://{addr}/v1/policy/history"),
    ]);
    assert!(ok && body.contains("initial policy"), "{body}");
    let (ok, _) = curl(&[&format!("http://{addr}/healthz")]);
    assert!(!ok, "plain HTTP must not be answered on the TLS port");
    let (ok, _) = curl(&[&format!("https://{addr}/healthz")]);
    assert!(
        !ok,
        "a client that does not trust the certificate must fail"
    );

    // The CLI client over https, trusting the certificate.
    let history = Command::new(env!("CARGO_BIN_EXE_microseg"))
        .args([
            "policy",
            "--api",
            &format!("https://{addr}"),
            "--cacert",
            cacert,
            "history",
        ])
        .env("MICROSEG_TOKEN", common::api::TOKEN)
        .output()
        .expect("microseg policy history");
    let text = String::from_utf8_lossy(&history.stdout);
    assert!(
        history.status.success() && text.contains("initial policy"),
        "{text}{}",
        String::from_utf8_lossy(&history.stderr)
    );
    let untrusting = Command::new(env!("CARGO_BIN_EXE_microseg"))
        .args(["policy", "--api", &format!("https://{addr}"), "history"])
        .env("MICROSEG_TOKEN", common::api::TOKEN)
        .output()
        .expect("microseg policy history");
    assert!(
        !untrusting.status.success(),
        "the system CAs do not trust a self-signed certificate"
    );

    // Files that are not what they claim are refused, naming the field.
    let refused = |cert: &std::path::Path, key: &std::path::Path| {
        microseg_control::api::tls::acceptor(cert, key)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let err = refused(&key, &key);
    assert!(
        err.contains("api.tls.cert") && err.contains("no certificate"),
        "{err}"
    );
    let err = refused(&cert, &cert);
    assert!(
        err.contains("api.tls.key") && err.contains("no private key"),
        "{err}"
    );
    let err = refused(&scratch.file("none.pem"), &key);
    assert!(err.contains("api.tls.cert: cannot read"), "{err}");
}

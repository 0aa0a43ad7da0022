//! Bearer tokens with roles, read from a file:
//!
//! ```text
//! # role   name    token (at least 16 characters)
//! admin    alice   4f6c1a1e0b7d4b5e9a1c2d3e4f5a6b7c
//! viewer   grafana 0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a
//! ```
//!
//! `viewer` may read; `admin` may also change. Tokens are compared in
//! constant time (every token is compared in full, whatever matches), and
//! never logged: only the token's name appears in logs and the audit
//! trail.

use std::path::Path;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Admin,
}

/// Why a tokens file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read the tokens file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("tokens file {path}, line {line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
}

/// A caller who presented a valid token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// The tokens.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(Caller, Vec<u8>)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        f.debug_list()
            .entries(self.entries.iter().map(|(caller, _)| caller))
            .finish()
    }
}

/// Equal, in time independent of where `a` and `b` differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= usize::from(x ^ y);
    }
    difference == 0
}

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

impl Tokens {
    /// Parses tokens-file text; `path` only names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, TokensError> {
        let mut entries = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |message: String| TokensError::Line {
                path: path.to_string(),
                line: index + 1,
                message,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [role, name, token] = fields[..] else {
                return Err(error("expected `ROLE NAME TOKEN`".into()));
            };
            let role = match role {
                "admin" => Role::Admin,
                "viewer" => Role::Viewer,
                other => return Err(error(format!("role `{other}` is not admin or viewer"))),
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(error(format!(
                    "the token of `{name}` is shorter than {MIN_TOKEN_LEN} characters"
                )));
            }
            if entries
                .iter()
                .any(|(c, _): &(Caller, Vec<u8>)| c.name == name)
            {
                return Err(error(format!("`{name}` is listed twice")));
            }
            entries.push((
                Caller {
                    name: name.to_string(),
                    role,
                },
                token.as_bytes().to_vec(),
            ));
        }
        Ok(Self { entries })
    }

    /// Reads a tokens file.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// One admin token (for a generated tokens file).
    pub fn single_admin(name: &str, token: &str) -> Self {
        Self {
            entries: vec![(
                Caller {
                    name: name.to_string(),
                    role: Role::Admin,
                },
                token.as_bytes().to_vec(),
            )],
        }
    }

    /// The caller an `Authorization` header value identifies.
    pub fn identify(&self, authorization: Option<&str>) -> Option<Caller> {
        let presented = authorization?.strip_prefix("Bearer ")?.trim().as_bytes();
        let mut found = None;
        for (caller, token) in &self.entries {
            // No early exit: every token is compared.
            if constant_time_eq(presented, token) && found.is_none() {
                found = Some(caller.clone());
            }
        }
        found
    }
}

/// A random token from the kernel's generator (hex).
pub fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str =
        "# tokens\nadmin alice 0123456789abcdef0123\n\nviewer graf fedcba9876543210fedc\n";

    #[test]
    fn tokens_identify_callers_and_roles() {
        let tokens = Tokens::parse(FILE, "t").expect("valid");
        let alice = tokens.identify(Some("Bearer 0123456789abcdef0123"));
        assert_eq!(
            alice.map(|c| (c.name, c.role)),
            Some(("alice".into(), Role::Admin))
        );
        let graf = tokens.identify(Some("Bearer fedcba9876543210fedc"));
        assert_eq!(graf.map(|c| c.role), Some(Role::Viewer));
        for bad in [
            None,
            Some("Bearer 0123456789abcdef012"),
            Some("Bearer 0123456789abcdef01234"),
            Some("0123456789abcdef0123"),
            Some("Basic 0123456789abcdef0123"),
            Some("Bearer "),
        ] {
            assert_eq!(tokens.identify(bad), None, "{bad:?}");
        }
        assert!(
            !format!("{tokens:?}").contains("0123456789"),
            "Debug hides tokens"
        );
    }

    #[test]
    fn bad_files_name_the_line() {
        for (text, expected) in [
            ("admin alice\n", "line 1: expected `ROLE NAME TOKEN`"),
            ("root bob 0123456789abcdef0123\n", "role `root`"),
            (
                "# c\nadmin bob short\n",
                "line 2: the token of `bob` is shorter",
            ),
            (
                "admin a 0123456789abcdef0123\nviewer a fedcba9876543210fedc\n",
                "`a` is listed twice",
            ),
        ] {
            let err = Tokens::parse(text, "t").expect_err(text).to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
        assert_eq!(random_token().expect("urandom").len(), 48);
    }
}

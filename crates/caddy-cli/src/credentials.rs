//! The credentials file `caddyctl login` writes and every later command
//! reads: a tiny TOML document
//!
//! ```toml
//! credential = "cs_…"
//! tenant = "acme"
//! ```
//!
//! written with mode 0600. Only this subset of TOML is read: `key = value`
//! lines with basic (`"…"`, escapes allowed) or literal (`'…'`) strings,
//! blank lines and `#` comments; unknown keys are ignored.

use std::io::{BufRead, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context as _, bail};

/// What the credentials file holds.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Bearer credential (a session token, an API key or the admin token).
    pub credential: String,
    /// Tenant the credential belongs to.
    pub tenant: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("credential", &"<redacted>").field("tenant", &self.tenant).finish()
    }
}

/// A TOML basic string.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reads one string value at the start of `text`; returns it and the rest.
fn unquote(text: &str) -> Result<(String, &str), String> {
    if let Some(rest) = text.strip_prefix('\'') {
        let end = rest.find('\'').ok_or("unterminated string")?;
        return Ok((rest[..end].to_string(), &rest[end + 1..]));
    }
    let Some(rest) = text.strip_prefix('"') else { return Err("expected a quoted string".into()) };
    let mut value = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &rest[i + 1..])),
            '\\' => {
                let escaped = match chars.next().map(|(_, c)| c) {
                    Some('"') => '"',
                    Some('\\') => '\\',
                    Some('n') => '\n',
                    Some('r') => '\r',
                    Some('t') => '\t',
                    Some('b') => '\u{8}',
                    Some('f') => '\u{c}',
                    Some(u @ ('u' | 'U')) => {
                        let len = if u == 'u' { 4 } else { 8 };
                        let hex: String = chars.by_ref().take(len).map(|(_, c)| c).collect();
                        u32::from_str_radix(&hex, 16)
                            .ok()
                            .filter(|_| hex.len() == len)
                            .and_then(char::from_u32)
                            .ok_or("bad unicode escape")?
                    }
                    _ => return Err("bad escape".into()),
                };
                value.push(escaped);
            }
            c => value.push(c),
        }
    }
    Err("unterminated string".into())
}

impl Credentials {
    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut text = String::from("# written by `caddyctl login`: keep it private\n");
        text.push_str(&format!("credential = {}\n", quote(&self.credential)));
        if let Some(tenant) = &self.tenant {
            text.push_str(&format!("tenant = {}\n", quote(tenant)));
        }
        text
    }

    /// Parses the file's text (see the module doc).
    pub fn from_text(text: &str) -> Result<Credentials, String> {
        let mut credential = None;
        let mut tenant = None;
        for (n, line) in text.lines().enumerate() {
            let at = |why: &str| format!("line {}: {why}", n + 1);
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once('=').ok_or_else(|| at("expected key = \"value\""))?;
            let (value, rest) = unquote(value.trim_start()).map_err(|e| at(&e))?;
            let rest = rest.trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                return Err(at("unexpected text after the value"));
            }
            match key.trim().trim_matches('"') {
                "credential" => credential = Some(value),
                "tenant" => tenant = Some(value).filter(|t| !t.is_empty()),
                _ => {}
            }
        }
        match credential {
            Some(credential) if !credential.is_empty() => Ok(Credentials { credential, tenant }),
            _ => Err("no credential in the file".into()),
        }
    }

    /// Reads a credentials file; warns on stderr when others may read it.
    pub fn read(path: &Path) -> anyhow::Result<Credentials> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading credentials file {}", path.display()))?;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                eprintln!(
                    "warning: credentials file {} is readable by others (mode {mode:04o}); run chmod 600 on it",
                    path.display()
                );
            }
        }
        Credentials::from_text(&text).map_err(|e| anyhow::anyhow!("credentials file {}: {e}", path.display()))
    }

    /// Writes the file with mode 0600 (see [`write_private`]).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        write_private(path, self.to_text().as_bytes())
    }
}

/// Writes `bytes` to `path`, readable and writable by the owner only: a
/// new file is created with mode 0600, an existing one is truncated and
/// set to 0600 before anything is written to it. A missing parent
/// directory is created (mode 0700).
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating directory {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {} to 0600", path.display()))?;
    file.write_all(bytes).with_context(|| format!("writing {}", path.display()))?;
    file.sync_all().with_context(|| format!("writing {}", path.display()))
}

/// Where a secret typed by the user comes from.
pub struct PasswordSource<'a> {
    /// `--password-stdin` was given.
    pub from_stdin: bool,
    /// Standard input.
    pub stdin: &'a mut dyn BufRead,
    /// The value of `CADDY_PASSWORD`, if set.
    pub env: Option<String>,
}

/// Environment variable a password may come from.
pub const PASSWORD_ENV: &str = "CADDY_PASSWORD";

/// Reads a password: the first line of stdin (without its line ending) when
/// `--password-stdin` was given, else `CADDY_PASSWORD` when `allow_env`.
/// `None` when neither applies.
pub fn read_password(source: PasswordSource<'_>, allow_env: bool) -> anyhow::Result<Option<String>> {
    if source.from_stdin {
        let mut line = String::new();
        let n = source.stdin.read_line(&mut line).context("reading the password from stdin")?;
        if n == 0 {
            bail!("--password-stdin: stdin is empty");
        }
        let password = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line);
        if password.is_empty() {
            bail!("--password-stdin: the first line of stdin is empty");
        }
        return Ok(Some(password.to_string()));
    }
    Ok(if allow_env { source.env.filter(|p| !p.is_empty()) } else { None })
}

/// [`read_password`] for a command that needs one: fails with a hint when
/// there is none.
pub fn require_password(source: PasswordSource<'_>) -> anyhow::Result<String> {
    match read_password(source, true)? {
        Some(password) => Ok(password),
        None => Err(crate::failure::usage(format!(
            "no password given: pipe it into --password-stdin (or set {PASSWORD_ENV})"
        ))),
    }
}

/// [`PasswordSource`] of this process.
pub fn with_process_password<T>(from_stdin: bool, f: impl FnOnce(PasswordSource<'_>) -> T) -> T {
    let stdin = std::io::stdin();
    let mut lock = stdin.lock();
    f(PasswordSource { from_stdin, stdin: &mut lock, env: std::env::var(PASSWORD_ENV).ok() })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn text_round_trip_and_subset_of_toml() {
        let creds = Credentials { credential: "cs_abc\"\\\n".into(), tenant: Some("acme".into()) };
        let text = creds.to_text();
        assert!(text.contains("credential = \"cs_abc\\\"\\\\\\n\"\n"), "{text}");
        assert!(text.contains("tenant = \"acme\"\n"), "{text}");
        assert_eq!(Credentials::from_text(&text).unwrap(), creds);
        let plain = Credentials { credential: "ck_1_x".into(), tenant: None };
        assert_eq!(Credentials::from_text(&plain.to_text()).unwrap(), plain);

        let hand = "# mine\n\n  credential='cs_lit' # comment\ntenant = \"t\\u00e9\"\nother = \"ignored\"\n";
        let parsed = Credentials::from_text(hand).unwrap();
        assert_eq!((parsed.credential.as_str(), parsed.tenant.as_deref()), ("cs_lit", Some("té")));
        assert_eq!(Credentials::from_text("credential = \"x\"\ntenant = \"\"\n").unwrap().tenant, None);
        assert!(!format!("{parsed:?}").contains("cs_lit"));

        for (bad, needle) in [
            ("tenant = \"t\"\n", "no credential"),
            ("credential = \"\"\n", "no credential"),
            ("credential\n", "line 1: expected key"),
            ("\ncredential = cs_x\n", "line 2: expected a quoted string"),
            ("credential = \"open\n", "unterminated"),
            ("credential = \"x\" y\n", "unexpected text"),
            ("credential = \"\\q\"\n", "bad escape"),
        ] {
            let err = Credentials::from_text(bad).unwrap_err();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }

    #[test]
    fn written_with_mode_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        let creds = Credentials { credential: "cs_secret".into(), tenant: Some("acme".into()) };
        creds.write(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(Credentials::read(&path).unwrap(), creds);

        // An existing, world-readable file is tightened before it is rewritten.
        let old = dir.path().join("old");
        std::fs::write(&old, "credential = \"cs_old_and_much_longer_than_the_new_one\"\n").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(mode(&old), 0o644);
        let new = Credentials { credential: "cs_new".into(), tenant: None };
        new.write(&old).unwrap();
        assert_eq!(mode(&old), 0o600);
        assert_eq!(Credentials::read(&old).unwrap(), new);

        // A missing directory is created.
        let nested = dir.path().join("a/b/credentials");
        creds.write(&nested).unwrap();
        assert_eq!(mode(&nested), 0o600);
        assert_eq!(mode(nested.parent().unwrap()), 0o700);

        let err = Credentials::read(&dir.path().join("missing")).unwrap_err();
        assert!(format!("{err:#}").contains("missing"), "{err:#}");
        std::fs::write(dir.path().join("bad"), "nonsense").unwrap();
        let err = Credentials::read(&dir.path().join("bad")).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn passwords_from_stdin_or_env() {
        let read = |from_stdin: bool, input: &str, env: Option<&str>| {
            let mut stdin = std::io::Cursor::new(input.as_bytes().to_vec());
            let source = PasswordSource { from_stdin, stdin: &mut stdin, env: env.map(str::to_owned) };
            require_password(source).map_err(|e| e.to_string())
        };
        assert_eq!(read(true, "pa ss\r\nnext\n", Some("env")).unwrap(), "pa ss");
        assert_eq!(read(true, "last", None).unwrap(), "last");
        assert!(read(true, "", None).unwrap_err().contains("stdin is empty"));
        assert!(read(true, "\n", None).unwrap_err().contains("empty"));
        assert_eq!(read(false, "ignored", Some("from-env")).unwrap(), "from-env");
        let err = read(false, "ignored", None).unwrap_err();
        assert!(err.contains("--password-stdin"), "{err}");
        assert!(read(false, "", Some("")).is_err());
        let mut stdin = std::io::Cursor::new(Vec::new());
        let source = PasswordSource { from_stdin: false, stdin: &mut stdin, env: Some("e".into()) };
        assert_eq!(read_password(source, false).unwrap(), None);
    }
}

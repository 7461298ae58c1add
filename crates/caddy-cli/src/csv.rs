//! A small RFC 4180 CSV reader and writer for user import and export:
//! comma-separated fields, `"`-quoted fields that may hold commas, quotes
//! (doubled) and line breaks, records ended by LF or CRLF.

use caddy_core::identity::api::{ImportUser, UserView};

/// One record and the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Line number of the record's first character.
    pub line: usize,
    /// Its fields, unquoted.
    pub fields: Vec<String>,
}

/// Splits `text` into records. Blank (or all-whitespace) lines are skipped; a leading UTF-8 byte
/// order mark is ignored. Errors name the line.
pub fn parse(text: &str) -> Result<Vec<Record>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while chars.peek().is_some() {
        let start = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false; // the current field was quoted
        loop {
            match chars.next() {
                None => {
                    fields.push(std::mem::take(&mut field));
                    break;
                }
                Some('"') if field.is_empty() && !quoted => {
                    quoted = true;
                    loop {
                        match chars.next() {
                            None => return Err(format!("line {start}: unterminated quoted field")),
                            Some('"') if chars.peek() == Some(&'"') => {
                                chars.next();
                                field.push('"');
                            }
                            Some('"') => break,
                            Some(c) => {
                                if c == '\n' {
                                    line += 1;
                                }
                                field.push(c);
                            }
                        }
                    }
                    match chars.peek() {
                        None | Some(',' | '\n' | '\r') => {}
                        Some(_) => return Err(format!("line {line}: text after the closing quote of a field")),
                    }
                }
                Some('"') => return Err(format!("line {line}: a quote inside an unquoted field (quote the field)")),
                Some(',') => {
                    fields.push(std::mem::take(&mut field));
                    quoted = false;
                }
                Some('\r') if chars.peek() == Some(&'\n') => {}
                Some('\n') => {
                    fields.push(std::mem::take(&mut field));
                    line += 1;
                    break;
                }
                Some(c) => {
                    if quoted {
                        return Err(format!("line {line}: text after the closing quote of a field"));
                    }
                    field.push(c)
                }
            }
        }
        let blank = fields.len() == 1 && fields[0].trim().is_empty() && !quoted;
        if !blank {
            records.push(Record { line: start, fields });
        }
    }
    Ok(records)
}

/// One field, quoted when it holds a comma, quote, line break or leading
/// or trailing blank.
pub fn field(value: &str) -> String {
    let needs_quotes = value.contains([',', '"', '\n', '\r'])
        || value.starts_with(char::is_whitespace)
        || value.ends_with(char::is_whitespace);
    if needs_quotes { format!("\"{}\"", value.replace('"', "\"\"")) } else { value.to_string() }
}

/// One record with its line feed.
pub fn record<S: AsRef<str>>(values: &[S]) -> String {
    let mut line = values.iter().map(|v| field(v.as_ref())).collect::<Vec<_>>().join(",");
    line.push('\n');
    line
}

/// Columns of `user list --format csv`.
pub const USER_COLUMNS: [&str; 5] = ["id", "email", "display_name", "disabled", "roles"];

/// Users as CSV with a header line ([`USER_COLUMNS`]; roles joined by `;`).
pub fn users_csv(users: &[UserView]) -> String {
    let mut out = record(&USER_COLUMNS);
    for u in users {
        out.push_str(&record(&[
            u.id.as_str(),
            u.email.as_str(),
            u.display_name.as_str(),
            if u.disabled { "true" } else { "false" },
            u.roles.join(";").as_str(),
        ]));
    }
    out
}

/// Columns of an import file; `email` and `display_name` are required.
pub const IMPORT_COLUMNS: [&str; 4] = ["email", "display_name", "roles", "password"];

/// Columns written by `user list --format csv` that an import accepts and
/// ignores (ids are assigned by the server; users are imported enabled).
const IGNORED_COLUMNS: [&str; 2] = ["id", "disabled"];

/// One user read from an import file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    /// Line the record starts on.
    pub line: usize,
    /// The user.
    pub user: ImportUser,
    /// The row said `disabled = true` (imported enabled anyway).
    pub was_disabled: bool,
}

/// Reads an import file: a header naming the columns (any order, among
/// `email,display_name,roles,password`, plus the ignored `id,disabled` of
/// an export), then one user per record. Roles are separated by `;`; a
/// missing or empty password leaves the account without one.
pub fn parse_import(text: &str) -> Result<Vec<ImportRow>, String> {
    let records = parse(text)?;
    let Some((header, rows)) = records.split_first() else {
        return Err("the file is empty: expected a header line `email,display_name,roles,password`".into());
    };
    let expected = IMPORT_COLUMNS.join(",");
    let mut columns: Vec<Option<&str>> = Vec::new();
    for name in &header.fields {
        let name = name.trim().to_ascii_lowercase();
        let known = IMPORT_COLUMNS.iter().chain(&IGNORED_COLUMNS).find(|c| **c == name).copied();
        let Some(known) = known else {
            return Err(format!("line {}: bad header: unknown column {name:?} (expected {expected})", header.line));
        };
        if columns.contains(&Some(known)) {
            return Err(format!("line {}: bad header: column {known:?} appears twice", header.line));
        }
        columns.push(Some(known));
    }
    for required in ["email", "display_name"] {
        if !columns.contains(&Some(required)) {
            return Err(format!("line {}: bad header: no {required:?} column (expected {expected})", header.line));
        }
    }
    let mut users = Vec::with_capacity(rows.len());
    for row in rows {
        if row.fields.len() > columns.len() {
            return Err(format!(
                "line {}: {} fields but the header names {} columns",
                row.line,
                row.fields.len(),
                columns.len()
            ));
        }
        let mut user = ImportUser {
            email: String::new(),
            display_name: String::new(),
            roles: Vec::new(),
            password: String::new(),
        };
        let mut was_disabled = false;
        for (column, value) in columns.iter().zip(&row.fields) {
            match column.unwrap_or_default() {
                "email" => user.email = value.trim().to_string(),
                "display_name" => user.display_name = value.trim().to_string(),
                "roles" => {
                    user.roles = value.split(';').map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned).collect()
                }
                "password" => user.password = value.clone(),
                "disabled" => was_disabled = value.trim().eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        if user.email.is_empty() {
            return Err(format!("line {}: empty email", row.line));
        }
        users.push(ImportRow { line: row.line, user, was_disabled });
    }
    Ok(users)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fields(records: &[Record]) -> Vec<Vec<&str>> {
        records.iter().map(|r| r.fields.iter().map(String::as_str).collect()).collect()
    }

    #[test]
    fn parses_quotes_commas_and_line_breaks() {
        let text = "a,b,c\r\n\"x, y\",\"say \"\"hi\"\"\",\n\n\"multi\nline\",2,\"\"\nlast,row,end";
        let records = parse(text).unwrap();
        assert_eq!(
            fields(&records),
            vec![
                vec!["a", "b", "c"],
                vec!["x, y", "say \"hi\"", ""],
                vec!["multi\nline", "2", ""],
                vec!["last", "row", "end"]
            ]
        );
        assert_eq!(records.iter().map(|r| r.line).collect::<Vec<_>>(), vec![1, 2, 4, 6]);
        assert_eq!(fields(&parse("\u{feff}a,b\n").unwrap()), vec![vec!["a", "b"]]);
        assert!(parse("").unwrap().is_empty());
        assert_eq!(fields(&parse("\"\"\n").unwrap()), vec![vec![""]]);
    }

    #[test]
    fn malformed_quoting_names_the_line() {
        assert_eq!(parse("a\nb,\"open\n").unwrap_err(), "line 2: unterminated quoted field");
        assert_eq!(parse("a\n\"x\"y,z\n").unwrap_err(), "line 2: text after the closing quote of a field");
        assert_eq!(parse("a\nb\nx\"y\n").unwrap_err(), "line 3: a quote inside an unquoted field (quote the field)");
    }

    #[test]
    fn writes_what_it_reads() {
        let rows: Vec<Vec<String>> = vec![
            vec!["plain".into(), "with, comma".into(), "quote \"q\"".into()],
            vec!["line\nbreak".into(), " padded ".into(), String::new()],
            vec!["crlf\r\n".into(), "é ünïcode".into(), ";".into()],
        ];
        let text: String = rows.iter().map(|r| record(r.as_slice())).collect();
        assert!(text.starts_with("plain,\"with, comma\",\"quote \"\"q\"\"\"\n"), "{text}");
        let back: Vec<Vec<String>> = parse(&text).unwrap().into_iter().map(|r| r.fields).collect();
        assert_eq!(back, rows);
    }

    fn user(id: &str, email: &str, name: &str, disabled: bool, roles: &[&str]) -> UserView {
        UserView {
            id: id.into(),
            email: email.into(),
            display_name: name.into(),
            disabled,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            teams: vec![],
            has_password: true,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn users_csv_round_trips_through_import() {
        let users = [
            user("user-1", "a@x.io", "Ann, Admin", false, &["admin", "viewer"]),
            user("user-2", "b@x.io", "Bob \"B\"", true, &[]),
        ];
        let text = users_csv(&users);
        assert_eq!(
            text,
            "id,email,display_name,disabled,roles\nuser-1,a@x.io,\"Ann, Admin\",false,admin;viewer\n\
             user-2,b@x.io,\"Bob \"\"B\"\"\",true,\n"
        );
        let rows = parse_import(&text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].user.display_name, "Ann, Admin");
        assert_eq!(rows[0].user.roles, vec!["admin", "viewer"]);
        assert!(!rows[0].was_disabled && rows[1].was_disabled);
        assert_eq!(rows[1].user.display_name, "Bob \"B\"");
        assert!(rows[1].user.roles.is_empty() && rows[1].user.password.is_empty());
    }

    #[test]
    fn import_rows() {
        let text = "email,display_name,roles,password\n\
                    a@x.io,Ann,admin; editor ,s3cret pass\n\
                    \"b@x.io\",\"Lee, Bob\",,\n\
                    c@x.io,Cy\n";
        let rows = parse_import(text).unwrap();
        assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(
            rows[0].user,
            ImportUser {
                email: "a@x.io".into(),
                display_name: "Ann".into(),
                roles: vec!["admin".into(), "editor".into()],
                password: "s3cret pass".into(),
            }
        );
        assert_eq!(rows[1].user.display_name, "Lee, Bob");
        assert!(rows[1].user.roles.is_empty());
        assert_eq!((rows[2].user.display_name.as_str(), rows[2].user.password.as_str()), ("Cy", ""));
        // Optional columns may be left out of the header, in any order.
        let rows = parse_import("Display_Name,Email\nDee,d@x.io\n").unwrap();
        assert_eq!((rows[0].user.email.as_str(), rows[0].user.display_name.as_str()), ("d@x.io", "Dee"));
        assert!(rows[0].user.roles.is_empty());
        assert!(parse_import("email,display_name\n").unwrap().is_empty());
    }

    #[test]
    fn bad_import_files_name_the_line() {
        let err = parse_import("email,name,roles\na@x.io,A,\n").unwrap_err();
        assert!(err.starts_with("line 1: bad header: unknown column \"name\""), "{err}");
        assert!(err.contains("email,display_name,roles,password"), "{err}");
        let err = parse_import("\n\nemail,roles\n").unwrap_err();
        assert!(err.starts_with("line 3: bad header: no \"display_name\" column"), "{err}");
        let err = parse_import("email,email,display_name\n").unwrap_err();
        assert!(err.starts_with("line 1: bad header: column \"email\" appears twice"), "{err}");
        assert!(parse_import("").unwrap_err().contains("empty"));
        let err = parse_import("email,display_name\na@x.io,A\nb@x.io,B,extra\n").unwrap_err();
        assert_eq!(err, "line 3: 3 fields but the header names 2 columns");
        let err = parse_import("email,display_name\n,A\n").unwrap_err();
        assert_eq!(err, "line 2: empty email");
        let err = parse_import("email,display_name\n\"a@x.io,A\n").unwrap_err();
        assert_eq!(err, "line 2: unterminated quoted field");
    }
}

//! Config errors that point at the file, line and field.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::{ImDocument, Item, TableLike};

/// A place in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The cause is in the message, not a `source`: error chains print it once.
    #[error("{}: cannot read config file: {cause}", file.display())]
    Read {
        file: PathBuf,
        cause: std::io::Error,
    },
    #[error("{location}: {}{message}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
    Invalid {
        location: Location,
        /// Dotted path of the offending field, when the error concerns one.
        field: Option<String>,
        message: String,
    },
}

impl ConfigError {
    /// Converts a parse or deserialisation error, finding the field its span falls in.
    pub(super) fn from_toml(file: &Path, src: &str, err: &toml::de::Error) -> Self {
        let span = err.span().unwrap_or(0..0);
        let mut field = ImDocument::parse(src)
            .ok()
            .and_then(|doc| innermost_field(doc.as_table(), span.start));
        let message = err.message().trim().to_owned();
        // "missing field `x`" points at the table that lacks it: name the field itself.
        if let Some(missing) = backticked(&message, "missing field `") {
            field = Some(match field {
                Some(table) => format!("{table}.{missing}"),
                None => missing.to_owned(),
            });
        }
        ConfigError::Invalid {
            location: location(file, src, span.start),
            field,
            message,
        }
    }

    /// An error about `field` (a dotted path), located at the field, or at the nearest table
    /// that exists when the field was left out.
    pub(super) fn at_field(file: &Path, src: &str, field: &str, message: String) -> Self {
        let offset = ImDocument::parse(src)
            .ok()
            .and_then(|doc| field_offset(doc.as_table(), field))
            .unwrap_or(0);
        ConfigError::Invalid {
            location: location(file, src, offset),
            field: Some(field.to_owned()),
            message,
        }
    }

    /// The field the error names, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => field.as_deref(),
            ConfigError::Read { .. } => None,
        }
    }

    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Invalid { location, .. } => Some(location),
            ConfigError::Read { .. } => None,
        }
    }
}

fn backticked<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next()
}

fn location(file: &Path, src: &str, offset: usize) -> Location {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Location {
        file: file.to_owned(),
        line,
        column: before[line_start..].chars().count() + 1,
    }
}

/// A byte range in the source, when toml_edit kept one.
type Span = Option<Range<usize>>;

fn contains(span: &Span, offset: usize) -> bool {
    span.as_ref()
        .is_some_and(|s| s.start <= offset && (offset < s.end || s.is_empty() && offset == s.start))
}

/// The dotted path of the smallest key or value whose span holds `offset`.
fn innermost_field(table: &dyn TableLike, offset: usize) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    visit(table, "", &mut |path, key_span, item_span| {
        for span in [key_span, item_span] {
            if contains(&span, offset) {
                let len = span.as_ref().map_or(usize::MAX, |s| s.len());
                if best.as_ref().is_none_or(|(l, _)| len < *l) {
                    best = Some((len, path.to_owned()));
                }
            }
        }
    });
    best.map(|(_, path)| path)
}

/// Where `field` (dotted) is written, or the nearest enclosing table that is.
fn field_offset(table: &dyn TableLike, field: &str) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None; // (matched depth, offset)
    visit(table, "", &mut |path, key_span, item_span| {
        let is_prefix = field == path || field.starts_with(&format!("{path}."));
        if !is_prefix {
            return;
        }
        let depth = path.split('.').count();
        if let Some(start) = key_span.or(item_span).map(|s| s.start) {
            if best.is_none_or(|(d, _)| depth > d) {
                best = Some((depth, start));
            }
        }
    });
    best.map(|(_, offset)| offset)
}

/// A key as written in a dotted path: bare when TOML allows it, else quoted, so that an empty
/// key (`'' = 1`) or one holding a dot is named unambiguously (found by fuzzing: an empty key
/// was named as the field ``).
fn key_repr(name: &str) -> std::borrow::Cow<'_, str> {
    let bare = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if !name.is_empty() && name.bytes().all(bare) {
        name.into()
    } else {
        format!("\"{}\"", name.escape_debug()).into()
    }
}

fn visit(table: &dyn TableLike, prefix: &str, f: &mut dyn FnMut(&str, Span, Span)) {
    for (name, _) in table.iter() {
        let Some((key, item)) = table.get_key_value(name) else {
            continue;
        };
        let name = key_repr(name);
        let path = if prefix.is_empty() {
            name.into_owned()
        } else {
            format!("{prefix}.{name}")
        };
        f(&path, key.span(), item.span());
        match item {
            Item::Table(t) => visit(t, &path, f),
            Item::Value(toml_edit::Value::InlineTable(t)) => visit(t, &path, f),
            Item::ArrayOfTables(a) => {
                for t in a.iter() {
                    visit(t, &path, f);
                }
            }
            _ => {}
        }
    }
}

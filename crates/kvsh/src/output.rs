//! Printing replies: redis-cli's terminal format, or raw for pipes.

use ringkv_client::Value;

pub struct Printer {
    pub raw: bool,
    pub show_context: bool,
}

impl Printer {
    pub fn print(&self, v: &Value, out: &mut Vec<u8>) {
        if self.raw {
            print_raw(v, out);
        } else {
            print_pretty(v, 0, out);
        }
        if self.show_context {
            if let Value::Versioned { context, .. } = v {
                out.extend_from_slice(format!("(context) {}\n", hex(context)).as_bytes());
            }
        }
    }
}

/// redis-cli's terminal format. `indent` is the column the value starts at (for the second
/// and later lines of a nested array).
fn print_pretty(v: &Value, indent: usize, out: &mut Vec<u8>) {
    match v {
        Value::Nil => out.extend_from_slice(b"(nil)\n"),
        Value::Simple(s) => {
            out.extend_from_slice(s);
            out.push(b'\n');
        }
        Value::Error(e) => {
            out.extend_from_slice(b"(error) ");
            out.extend_from_slice(e);
            out.push(b'\n');
        }
        Value::Int(n) => out.extend_from_slice(format!("(integer) {n}\n").as_bytes()),
        Value::Bulk(b) => {
            quote(b, out);
            out.push(b'\n');
        }
        Value::Array(items) => print_numbered(items.iter(), items.len(), indent, out),
        Value::Versioned { values, .. } => match values.as_slice() {
            [] => out.extend_from_slice(b"(nil)\n"),
            [one] => {
                quote(one, out);
                out.push(b'\n');
            }
            many => {
                let items: Vec<Value> = many.iter().cloned().map(Value::Bulk).collect();
                print_numbered(items.iter(), items.len(), indent, out);
            }
        },
    }
}

fn print_numbered<'a>(
    items: impl Iterator<Item = &'a Value>,
    len: usize,
    indent: usize,
    out: &mut Vec<u8>,
) {
    if len == 0 {
        out.extend_from_slice(b"(empty array)\n");
        return;
    }
    let width = len.to_string().len();
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.resize(out.len() + indent, b' ');
        }
        let label = format!("{:>width$}) ", i + 1);
        out.extend_from_slice(label.as_bytes());
        print_pretty(item, indent + label.len(), out);
    }
}

/// redis-cli's non-terminal format: values as they are, one per line.
fn print_raw(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Nil => out.extend_from_slice(b"(nil)\n"),
        Value::Simple(s) | Value::Bulk(s) => {
            out.extend_from_slice(s);
            out.push(b'\n');
        }
        Value::Error(e) => {
            out.extend_from_slice(b"(error) ");
            out.extend_from_slice(e);
            out.push(b'\n');
        }
        Value::Int(n) => out.extend_from_slice(format!("{n}\n").as_bytes()),
        Value::Array(items) => {
            for item in items {
                print_raw(item, out);
            }
        }
        Value::Versioned { values, .. } => {
            if values.is_empty() {
                out.extend_from_slice(b"(nil)\n");
            }
            for value in values {
                out.extend_from_slice(value);
                out.push(b'\n');
            }
        }
    }
}

/// Quotes bytes as redis-cli does (`sdscatrepr`): `"` and `\` escaped, `\n \r \t \a \b`,
/// other non-printable bytes as `\xHH`.
fn quote(b: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &c in b {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            7 => out.extend_from_slice(b"\\a"),
            8 => out.extend_from_slice(b"\\b"),
            0x20..=0x7e => out.push(c),
            _ => out.extend_from_slice(format!("\\x{c:02x}").as_bytes()),
        }
    }
    out.push(b'"');
}

pub fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "(empty)".into();
    }
    b.iter().map(|c| format!("{c:02x}")).collect()
}

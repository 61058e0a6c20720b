//! Secrets of every shape, right and wrong: loading never panics, and no error ever
//! repeats a value. Values are long random strings, so any echo of one is caught.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Shape {
    /// `field: {name: value, ...}`
    Map(Vec<(u8, Value)>),
    /// `field: value`
    Scalar(Value),
    /// `field: [value, ...]`
    List(Vec<Value>),
}

#[derive(Arbitrary, Debug)]
enum Value {
    Plain(u64),
    Quoted(u64),
    Nested(u64),
    Listed(u64),
    Number(u32),
}

#[derive(Arbitrary, Debug)]
struct Input {
    data: Option<Shape>,
    string_data: Option<Shape>,
    metadata_garbage: Option<u64>,
}

/// A value that cannot occur in a message by accident.
fn secret(n: u64) -> String {
    format!("S3CR3T{n:016x}")
}

fn value(v: &Value, out: &mut Vec<String>) -> String {
    match v {
        Value::Plain(n) => {
            out.push(secret(*n));
            secret(*n)
        }
        Value::Quoted(n) => {
            out.push(secret(*n));
            format!("'{}'", secret(*n))
        }
        Value::Nested(n) => {
            out.push(secret(*n));
            format!("{{inner: {}}}", secret(*n))
        }
        Value::Listed(n) => {
            out.push(secret(*n));
            format!("[{}]", secret(*n))
        }
        Value::Number(n) => format!("{n}"),
    }
}

fn shape(field: &str, s: &Shape, out: &mut Vec<String>) -> String {
    match s {
        Shape::Map(entries) => {
            let body: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("  client-{k}: {}", value(v, out)))
                .collect();
            format!("{field}:\n{}\n", body.join("\n"))
        }
        Shape::Scalar(v) => format!("{field}: {}\n", value(v, out)),
        Shape::List(vs) => {
            let items: Vec<String> = vs.iter().map(|v| value(v, out)).collect();
            format!("{field}: [{}]\n", items.join(", "))
        }
    }
}

fuzz_target!(|input: Input| {
    let mut secrets = Vec::new();
    let mut doc = String::from("apiVersion: v1\nkind: Secret\n");
    match input.metadata_garbage {
        Some(n) => {
            secrets.push(secret(n));
            doc.push_str(&format!("metadata: {}\n", secret(n)));
        }
        None => doc.push_str("metadata: {name: keys, namespace: apps}\n"),
    }
    if let Some(s) = &input.data {
        doc.push_str(&shape("data", s, &mut secrets));
    }
    if let Some(s) = &input.string_data {
        doc.push_str(&shape("stringData", s, &mut secrets));
    }
    if let Err(errors) = keyway_sources::files::load_str("s.yaml", &doc) {
        for e in errors {
            let shown = e.to_string();
            for s in &secrets {
                assert!(!shown.contains(&s[6..]), "{shown} repeats a value");
            }
        }
    }
});

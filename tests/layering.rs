//! The import rules of `src/` (DESIGN.md): data flows ingest → hub → transcode → hls →
//! record/relay → http; a consumer may import its producers and the shared leaves, a producer
//! never imports its consumers, and no two modules import each other.
//!
//! This reads every `crate::…` path in `src/`, outside comments and strings (a small scan
//! instead of a tool: the rules are a table and a cycle check; the crate's modules refer to each
//! other only as `crate::…`, `super::` staying inside a module). `LIVEGATE_PRINT_GRAPH=1 cargo test --test layering -- --nocapture`
//! prints the graph (`scripts/import-graph.sh`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module → what it may import. Leaves first, then down the data flow; `server` wires them all.
const ALLOWED: &[(&str, &[&str])] = &[
    ("util", &[]),
    ("datadir", &[]),
    ("config", &["util"]),
    ("metrics", &["util"]),
    ("net", &["util"]),
    ("webhook", &["config", "metrics", "util"]),
    ("media", &["util"]),
    ("stream", &["media", "metrics", "util"]),
    ("auth", &["config", "util"]),
    ("access", &["config", "util"]),
    ("channel", &["util"]),
    ("audience", &[]),
    ("chat", &[]),
    (
        "cluster",
        &[
            "auth", "channel", "chat", "relay", "stream", "hls", "config", "metrics", "util",
        ],
    ),
    ("rtmp", &["media", "config", "metrics", "net", "util"]),
    (
        "ingest",
        &[
            "auth", "rtmp", "stream", "media", "config", "metrics", "net", "util",
        ],
    ),
    (
        "transcode",
        &["stream", "media", "config", "metrics", "util"],
    ),
    (
        "hls",
        &["transcode", "stream", "media", "config", "metrics", "util"],
    ),
    (
        "record",
        &["hls", "stream", "media", "config", "metrics", "util"],
    ),
    (
        "relay",
        &["rtmp", "stream", "media", "config", "metrics", "util"],
    ),
    (
        "http",
        &[
            "access",
            "audience",
            "auth",
            "channel",
            "chat",
            "cluster",
            "ingest",
            "stream",
            "transcode",
            "hls",
            "record",
            "relay",
            "media",
            "config",
            "metrics",
            "net",
            "util",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `code` without comments, string literals and char literals (so `"rtmp://…"` or a path in a
/// doc comment is not taken for an import). Raw strings are rare in this crate and treated as
/// plain ones.
fn code_only(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    while i < chars.len() {
        let (c, next) = (chars[i], chars.get(i + 1).copied());
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3; // 'x'
        } else if c == '\'' && next == Some('\\') {
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Top-level module names after `crate::` in `code`, including each name in a
/// `crate::{a::x, b}` group.
fn imported_modules(code: &str) -> BTreeSet<String> {
    let code = code_only(code);
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 || (depth == 1 && ch == ',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.insert(name);
                    }
                    item.clear();
                    if depth == 0 {
                        break;
                    }
                } else if depth == 1 {
                    item.push(ch);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let first = relative.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "main" || module == "lib" {
            continue;
        }
        let code = std::fs::read_to_string(&file).expect("read");
        let imports = graph.entry(module.clone()).or_default();
        for m in imported_modules(&code) {
            if m != module {
                imports.insert(m);
            }
        }
    }
    graph
}

/// A cycle as a path, if any (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn top_level_modules_import_only_down_the_data_flow_and_never_in_a_cycle() {
    let graph = graph();
    if std::env::var_os("LIVEGATE_PRINT_GRAPH").is_some() {
        for (module, imports) in &graph {
            let list: Vec<_> = imports.iter().map(String::as_str).collect();
            println!("{module} -> {}", list.join(" "));
        }
    }
    assert!(
        graph.len() >= 10,
        "the scan found too few modules: {graph:?}"
    );
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut violations = Vec::new();
    for (module, imports) in &graph {
        if module == "server" {
            continue;
        }
        let Some(may) = allowed.get(module.as_str()) else {
            violations.push(format!(
                "{module}: not in the layering table (tests/layering.rs)"
            ));
            continue;
        };
        for m in imports {
            if !may.contains(&m.as_str()) {
                violations.push(format!("{module} imports {m}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_scan_sees_grouped_and_plain_paths() {
    let code = "use crate::{a::X, b::{c, d}, e};\nfn f() { crate::g::h(); } // crate::comment";
    let found: Vec<_> = imported_modules(code).into_iter().collect();
    assert_eq!(found, vec!["a", "b", "e", "g"]);
}

#[test]
fn strings_and_comments_are_not_code() {
    let code = "let u = \"rtmp://x crate::no\"; crate::yes::f(); /* crate::block */ let c = '\"'; crate::after::g();";
    let found: Vec<_> = imported_modules(code).into_iter().collect();
    assert_eq!(found, vec!["after", "yes"]);
}

#[test]
fn a_cycle_is_found() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g).unwrap(), vec!["a", "b", "c", "a"]);
    g.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&g), None);
}

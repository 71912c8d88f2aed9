//! The module layering of the server crate: dependencies between the top-level modules of
//! `src/` point one way (the graph has no cycle), and the store, at the bottom, imports
//! nothing from the layers above it (no sockets, peers or durability policy); the ring
//! (cluster placement, liveness, quorums) imports nothing but `util`.
//!
//! Edges are read from the source: every `crate::<module>` path (in `use` lines or inline,
//! including `use crate::{a, b}` groups) outside comments, in every file of `src/` except the
//! binaries (`main.rs`, `src/bin/`) and `lib.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// What the store may never import.
const ABOVE_STORE: &[&str] = &[
    "wal",
    "snapshot",
    "durability",
    "node",
    "net",
    "cmd",
    "stats",
    "metrics",
    "datadir",
    "ring",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules named by `crate::` paths in `src` (comments removed).
fn crate_refs(src: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for line in src.lines() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            // `ringkv_crate::` or similar would not be a crate path.
            let before = rest[..i].chars().last();
            rest = &rest[i + "crate::".len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a, b::c}`: the first segment of each item (on this line).
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name = ident(item.trim());
                    if !name.is_empty() {
                        refs.insert(name);
                    }
                }
            } else {
                let name = ident(rest);
                if !name.is_empty() {
                    refs.insert(name);
                }
            }
        }
    }
    refs
}

/// The module graph of `src/`: top-level module → the top-level modules it names.
fn module_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("file under src");
        let first = rel.components().next().expect("non-empty path");
        let first = first.as_os_str().to_string_lossy().into_owned();
        if first == "bin" || first == "main.rs" || first == "lib.rs" {
            continue;
        }
        let module = first.trim_end_matches(".rs").to_string();
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let deps = graph.entry(module.clone()).or_default();
        for r in crate_refs(&text) {
            if r != module {
                deps.insert(r);
            }
        }
    }
    graph
}

/// A cycle in the graph as a path `a → b → … → a`, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        n: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|m| m == n).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n.to_string(), Mark::Open);
        stack.push(n.to_string());
        for d in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, graph, marks, stack) {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(n.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

fn graph_of(edges: &[(&str, &str)]) -> Graph {
    let mut g = Graph::new();
    for (a, b) in edges {
        g.entry(a.to_string()).or_default().insert(b.to_string());
        g.entry(b.to_string()).or_default();
    }
    g
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = module_graph();
    // The scan sees real edges (else the check below would pass on an empty graph).
    for (from, to) in [("net", "cmd"), ("store", "record"), ("durability", "wal")] {
        assert!(
            graph.get(from).is_some_and(|d| d.contains(to)),
            "expected the edge {from} → {to} in the module graph {graph:?}"
        );
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "the modules of src/ import each other in a cycle: {}\n\
             (dependencies must point one way; move the shared item to a lower module)",
            cycle.join(" → ")
        );
    }
}

#[test]
fn the_store_imports_nothing_above_it() {
    let graph = module_graph();
    let store = graph.get("store").expect("src/store is scanned");
    let bad: Vec<&String> = store
        .iter()
        .filter(|d| ABOVE_STORE.contains(&d.as_str()))
        .collect();
    assert!(
        bad.is_empty(),
        "src/store imports {bad:?}; the store must know nothing of sockets, peers or \
         durability policy (it may use {store:?} minus those)"
    );
}

#[test]
fn the_leaf_modules_import_nothing_from_the_crate() {
    let graph = module_graph();
    for leaf in ["util", "record", "disk", "config"] {
        let deps = graph
            .get(leaf)
            .unwrap_or_else(|| panic!("src/{leaf} is scanned"));
        assert!(
            deps.is_empty(),
            "src/{leaf} must be a leaf but imports {deps:?}"
        );
    }
}

#[test]
fn the_ring_imports_nothing_but_util() {
    // The cluster's placement, liveness and quorum logic stays pure: no store, no sockets.
    let graph = module_graph();
    let ring = graph.get("ring").expect("src/ring is scanned");
    let bad: Vec<&String> = ring.iter().filter(|d| d.as_str() != "util").collect();
    assert!(
        bad.is_empty(),
        "src/ring imports {bad:?}; it may use only crate::util (keep it pure and below node)"
    );
}

#[test]
fn the_checks_catch_what_they_look_for() {
    let refs = crate_refs(
        "use crate::node::lock;\n\
         use crate::{wal, util::now_ms};\n\
         // use crate::commented;\n\
         let m = crate::durability::Marks::new(); // crate::trailing\n\
         ringkv_crate::not_this();\n",
    );
    let want: BTreeSet<String> = ["node", "wal", "util", "durability"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(refs, want);

    let cyclic = graph_of(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]);
    let cycle = find_cycle(&cyclic).expect("a → b → c → a is a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    assert_eq!(
        find_cycle(&graph_of(&[("a", "b"), ("b", "c"), ("a", "c")])),
        None
    );
}

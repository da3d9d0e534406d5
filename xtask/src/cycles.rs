//! The module import check of `cargo xtask test`: no module of any crate of
//! the workspace may reach itself through what it uses.
//!
//! A module is a file (`src/apply.rs`, `src/rollout/mod.rs`). It uses
//! another when its code outside `#[cfg(test)]` names a path into it:
//! `crate::…`, `super::…`, `self::…`, or one of its own submodules by name.
//! A path that ends in an item of a module (not a submodule) is a use of
//! that module; `crate::Error` re-exported by `lib.rs` is a use of the
//! crate root. Declaring a submodule (`mod x;`) is not a use. A loop among
//! the uses fails the step and is printed with one line that makes each
//! edge.
//!
//! The paths are read from the text: comments and string literals are
//! blanked first, and a path is followed only as far as it names a file
//! module, which is all a module loop needs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};

/// One use of a module by another: where it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Use {
    pub file: PathBuf,
    pub line: usize,
}

/// The modules of one crate and their uses of each other.
#[derive(Debug, Default)]
pub struct Graph {
    /// Module path (`""` for the crate root, `"rollout::canary"`) → file.
    pub modules: BTreeMap<String, PathBuf>,
    /// (from, to) → the first place `from` uses `to`.
    pub uses: BTreeMap<(String, String), Use>,
}

/// The crates checked: each root file of the workspace's members.
pub fn roots(workspace: &Path) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for member in ["operator", "server", "plugin", "tests", "xtask"] {
        for root in ["src/lib.rs", "src/main.rs"] {
            let path = workspace.join(member).join(root);
            if path.is_file() {
                roots.push(path);
            }
        }
    }
    roots
}

/// `cargo xtask loops`: prints every loop; fails when there is one.
pub fn run() -> Result<ExitCode> {
    let loops = check(&crate::workspace::root())?;
    for description in &loops {
        println!("{description}");
    }
    println!("{} module loop(s)", loops.len());
    Ok(if loops.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Every loop of every crate under `workspace`, described; empty when none.
pub fn check(workspace: &Path) -> Result<Vec<String>> {
    let mut loops = Vec::new();
    for root in roots(workspace) {
        let graph = read_crate(&root)?;
        for component in loops_of(&graph) {
            loops.push(describe(&root, &graph, &component, workspace));
        }
    }
    Ok(loops)
}

fn relative(path: &Path, workspace: &Path) -> String {
    path.strip_prefix(workspace)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Reads the crate whose root file is `root` (its `lib.rs` or `main.rs`).
/// A `main.rs` beside a `lib.rs` reaches the library through the crate's
/// name, not `crate::`, so the two are separate graphs.
pub fn read_crate(root: &Path) -> Result<Graph> {
    let mut graph = Graph::default();
    let mut sources = BTreeMap::new();
    let mut pending = vec![(String::new(), root.to_path_buf())];
    while let Some((module, file)) = pending.pop() {
        let text =
            std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
        let code = without_tests(&blank(&text));
        let dir = children_dir(&file);
        for name in declared(&code) {
            let child = join(&module, &name);
            let candidates = [
                dir.join(format!("{name}.rs")),
                dir.join(&name).join("mod.rs"),
            ];
            if let Some(path) = candidates.into_iter().find(|p| p.is_file()) {
                pending.push((child, path));
            }
        }
        graph.modules.insert(module.clone(), file.clone());
        sources.insert(module, (file, code));
    }
    for (module, (file, code)) in &sources {
        for (line, path) in paths(code, module, &graph) {
            let target = longest_module(&graph, &path);
            if &target == module {
                continue;
            }
            graph
                .uses
                .entry((module.clone(), target))
                .or_insert_with(|| Use {
                    file: file.clone(),
                    line,
                });
        }
    }
    Ok(graph)
}

/// The directory a file's submodules live in.
fn children_dir(file: &Path) -> PathBuf {
    let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    match file.file_name().and_then(|n| n.to_str()) {
        Some("mod.rs" | "lib.rs" | "main.rs") => dir,
        _ => dir.join(file.file_stem().unwrap_or_default()),
    }
}

fn join(module: &str, name: &str) -> String {
    if module.is_empty() {
        name.to_owned()
    } else {
        format!("{module}::{name}")
    }
}

/// The submodules a file declares with `mod name;` (not inline ones).
fn declared(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        let rest = line
            .strip_prefix("pub(crate) mod ")
            .or_else(|| line.strip_prefix("pub(super) mod "))
            .or_else(|| line.strip_prefix("pub mod "))
            .or_else(|| line.strip_prefix("mod "));
        if let Some(rest) = rest
            && let Some(name) = rest.trim_end().strip_suffix(';')
        {
            names.push(name.trim().to_owned());
        }
    }
    names
}

/// `text` with comments, string and char literals replaced by spaces (line
/// breaks kept, so line numbers stay).
fn blank(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let keep = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut nesting = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    nesting += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    nesting -= 1;
                    out.push_str("  ");
                    i += 2;
                    if nesting == 0 {
                        break;
                    }
                } else {
                    out.push(keep(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !chars
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string: r"…", r#"…"#.
            let mut hashes = 0;
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &c in &chars[i..j.min(chars.len())] {
                out.push(keep(c));
            }
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(keep(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && is_char_literal(&chars, i) {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether the `'` at `i` opens a char literal (`'a'`, `'\n'`), not a
/// lifetime (`'a`).
fn is_char_literal(chars: &[char], i: usize) -> bool {
    matches!(
        (chars.get(i + 1), chars.get(i + 2)),
        (Some('\\'), _) | (Some(_), Some('\''))
    )
}

/// `code` without the items marked `#[cfg(test)]` (their lines blanked).
fn without_tests(code: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let lines: Vec<&str> = code.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "#[cfg(test)]" {
            // Blank up to the end of the next item: its `;` or its braces
            // closing.
            let mut level = 0_i32;
            let mut opened = false;
            while i < lines.len() {
                let line = lines[i];
                out.push(String::new());
                i += 1;
                for c in line.chars() {
                    match c {
                        '{' => {
                            level += 1;
                            opened = true;
                        }
                        '}' => level -= 1,
                        _ => {}
                    }
                }
                let ends = (opened && level <= 0) || (!opened && line.trim_end().ends_with(';'));
                if ends && line.trim() != "#[cfg(test)]" {
                    break;
                }
            }
        } else {
            out.push(lines[i].to_owned());
            i += 1;
        }
    }
    out.join("\n")
}

/// Every module path the code of `module` names, as absolute segments,
/// with its line.
fn paths(code: &str, module: &str, graph: &Graph) -> Vec<(usize, Vec<String>)> {
    let own: Vec<String> = graph
        .modules
        .keys()
        .filter_map(|m| {
            let rest = if module.is_empty() {
                Some(m.as_str())
            } else {
                m.strip_prefix(&format!("{module}::"))
            }?;
            (!rest.is_empty() && !rest.contains("::")).then(|| rest.to_owned())
        })
        .collect();
    let mut found = Vec::new();
    for (index, line) in code.lines().enumerate() {
        let tokens = tokenize(line);
        let mut t = 0;
        while t < tokens.len() {
            let token = tokens[t].as_str();
            let preceded_by_path = t > 0 && tokens[t - 1] == "::";
            let starts = !preceded_by_path
                && tokens.get(t + 1).is_some_and(|n| n == "::")
                && (matches!(token, "crate" | "super" | "self") || own.iter().any(|o| o == token));
            if !starts {
                t += 1;
                continue;
            }
            let (relative, next) = use_tree(&tokens, t);
            for path in relative {
                if let Some(absolute) = absolute(module, &path) {
                    found.push((index + 1, absolute));
                }
            }
            t = next.max(t + 1);
        }
    }
    found
}

/// Identifiers, `::` and the punctuation of use trees.
fn tokenize(line: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push("::".to_owned());
            i += 2;
        } else if c.is_whitespace() {
            i += 1;
        } else {
            tokens.push(c.to_string());
            i += 1;
        }
    }
    tokens
}

/// The paths of the path or use tree starting at `tokens[start]`
/// (`crate::a::{b, c::d}`), and the index after it.
fn use_tree(tokens: &[String], start: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    let mut i = start;
    loop {
        match tokens.get(i).map(String::as_str) {
            Some("{") => {
                let mut paths = Vec::new();
                i += 1;
                loop {
                    match tokens.get(i).map(String::as_str) {
                        None => return (paths, i),
                        Some("}") => return (paths, i + 1),
                        Some(",") => i += 1,
                        Some(_) => {
                            let (inner, next) = use_tree(tokens, i);
                            for p in inner {
                                let mut full = prefix.clone();
                                full.extend(p);
                                paths.push(full);
                            }
                            i = next;
                        }
                    }
                }
            }
            Some(token) if token == "*" || token == "self" && !prefix.is_empty() => {
                return (vec![prefix], i + 1);
            }
            Some(token) if is_ident(token) => {
                prefix.push(token.to_owned());
                if tokens.get(i + 1).is_some_and(|n| n == "::") {
                    i += 2;
                } else {
                    return (vec![prefix], i + 1);
                }
            }
            _ => return (vec![prefix], i),
        }
    }
}

fn is_ident(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// `path` as written in `module`, made absolute (segments from the crate
/// root); `None` when it leaves the crate.
fn absolute(module: &str, path: &[String]) -> Option<Vec<String>> {
    let mut current: Vec<String> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").map(str::to_owned).collect()
    };
    let mut segments = path.iter().peekable();
    match segments.peek().map(|s| s.as_str()) {
        Some("crate") => {
            current.clear();
            segments.next();
        }
        Some("self") => {
            segments.next();
        }
        Some("super") => {
            while segments.peek().is_some_and(|s| *s == "super") {
                segments.next();
                current.pop()?;
            }
        }
        // One of the module's own submodules, named as it is in scope.
        _ => {}
    }
    current.extend(segments.cloned());
    Some(current)
}

/// The module a path leads into: its longest prefix that is a module.
fn longest_module(graph: &Graph, path: &[String]) -> String {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| graph.modules.contains_key(m))
        .unwrap_or_default()
}

/// The strongly connected components of the use graph with more than one
/// module: each is a loop (Tarjan's algorithm).
pub fn loops_of(graph: &Graph) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = graph.modules.keys().collect();
    let index_of: BTreeMap<&String, usize> =
        nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (from, to) in graph.uses.keys() {
        if let (Some(&f), Some(&t)) = (index_of.get(from), index_of.get(to)) {
            next[f].push(t);
        }
    }
    let mut tarjan = Tarjan {
        next: &next,
        index: vec![None; nodes.len()],
        low: vec![0; nodes.len()],
        on_stack: vec![false; nodes.len()],
        stack: Vec::new(),
        counter: 0,
        components: Vec::new(),
    };
    for node in 0..nodes.len() {
        if tarjan.index[node].is_none() {
            tarjan.visit(node);
        }
    }
    tarjan
        .components
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut names: Vec<String> = c.into_iter().map(|i| nodes[i].clone()).collect();
            names.sort();
            names
        })
        .collect()
}

struct Tarjan<'a> {
    next: &'a [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    counter: usize,
    components: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn visit(&mut self, node: usize) {
        self.index[node] = Some(self.counter);
        self.low[node] = self.counter;
        self.counter += 1;
        self.stack.push(node);
        self.on_stack[node] = true;
        for &to in &self.next[node] {
            match self.index[to] {
                None => {
                    self.visit(to);
                    self.low[node] = self.low[node].min(self.low[to]);
                }
                Some(index) if self.on_stack[to] => self.low[node] = self.low[node].min(index),
                Some(_) => {}
            }
        }
        if Some(self.low[node]) == self.index[node] {
            let mut component = Vec::new();
            while let Some(top) = self.stack.pop() {
                self.on_stack[top] = false;
                component.push(top);
                if top == node {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}

/// A loop as text: its modules, then each use inside it with its place.
fn describe(root: &Path, graph: &Graph, component: &[String], workspace: &Path) -> String {
    let name = |m: &str| {
        if m.is_empty() {
            "(crate root)".to_owned()
        } else {
            m.to_owned()
        }
    };
    let crate_name = relative(root, workspace);
    let mut text = format!(
        "{crate_name}: {} modules use each other in a loop: {}",
        component.len(),
        component
            .iter()
            .map(|m| name(m))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let members: BTreeSet<&String> = component.iter().collect();
    for ((from, to), at) in &graph.uses {
        if members.contains(from) && members.contains(to) {
            let file = at.file.strip_prefix(workspace).unwrap_or(&at.file);
            let _ = write!(
                text,
                "\n    {} uses {} at {}:{}",
                name(from),
                name(to),
                file.display(),
                at.line
            );
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crate written into a temporary directory: (path, text) pairs.
    fn crate_of(files: &[(&str, &str)]) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let root = dir.path().join("src/lib.rs");
        (dir, root)
    }

    mod tempdir {
        use std::path::{Path, PathBuf};

        pub struct Dir(PathBuf);

        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "xtask-cycles-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Self(path)
            }

            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn loops(files: &[(&str, &str)]) -> Vec<Vec<String>> {
        let (_dir, root) = crate_of(files);
        loops_of(&read_crate(&root).unwrap())
    }

    #[test]
    fn a_loop_through_use_trees_and_paths_is_found() {
        let found = loops(&[
            ("src/lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
            ("src/a.rs", "use crate::{b::{self, Thing}, c};\n"),
            ("src/b.rs", "pub fn f() { crate::c::g() }\n"),
            ("src/c.rs", "use super::a::X;\n"),
        ]);
        assert_eq!(
            found,
            vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]
        );
    }

    #[test]
    fn uses_downward_only_are_no_loop() {
        let found = loops(&[
            ("src/lib.rs", "pub mod a;\npub mod b;\n"),
            (
                "src/a.rs",
                "mod inner;\nuse crate::b;\nfn f() { inner::g() }\n",
            ),
            ("src/a/inner.rs", "use crate::b::Y;\n"),
            ("src/b.rs", "pub struct Y;\n"),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_parent_and_a_child_using_each_other_are_a_loop() {
        let found = loops(&[
            ("src/lib.rs", "pub mod a;\n"),
            (
                "src/a/mod.rs",
                "mod step;\nconst N: u8 = 1;\nfn f() { step::go() }\n",
            ),
            ("src/a/step.rs", "use super::N;\npub fn go() {}\n"),
        ]);
        assert_eq!(found, vec![vec!["a".to_owned(), "a::step".to_owned()]]);
    }

    #[test]
    fn the_crate_root_counts_when_its_items_are_used() {
        let found = loops(&[
            (
                "src/lib.rs",
                "pub mod a;\npub fn run() { a::go() }\npub(crate) fn signal() {}\n",
            ),
            ("src/a.rs", "pub fn go() { crate::signal() }\n"),
        ]);
        assert_eq!(found, vec![vec![String::new(), "a".to_owned()]]);
    }

    #[test]
    fn tests_comments_and_strings_are_not_uses() {
        let found = loops(&[
            ("src/lib.rs", "pub mod a;\npub mod b;\n"),
            ("src/a.rs", "use crate::b::Y;\n"),
            (
                "src/b.rs",
                "pub struct Y;\n// crate::a::X\nconst S: &str = \"crate::a::X\";\nconst R: &str = r#\"super::a\"#;\nfn l<'a>(x: &'a str) -> char { 'a' }\n#[cfg(test)]\nmod tests {\n    use crate::a::X;\n}\n",
            ),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }
}

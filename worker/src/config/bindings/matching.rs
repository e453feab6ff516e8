//! Isolation between clients, in one place: which topics a binding owns, and which index and measurement
//! names its plugin may write to.
//!
//! Topics. `topic` is one topic name; `topic_regex` matches whole topic names (`client-a` does not match
//! `client-ab`). A topic belongs to exactly one binding. When bindings are loaded (`millrace config check`,
//! `millrace bindings check`, a live reload) an overlap is refused, naming both bindings: two equal names, a
//! name a regex matches, or two regexes that match a common topic name. Two regexes are compared on their DFAs
//! (the product automaton, walked over the characters Kafka allows in topic names, up to its length limit),
//! which finds the shortest common topic name, so the error shows one. When a DFA would be too large to build
//! the pair cannot be decided here; the worker then refuses the records of a topic both match at run time
//! (`bindings::find`).
//!
//! Allowlists (`allowed_indices`, `allowed_measurements`). An entry admits whole name segments: `acme` admits
//! `acme` and names that continue after a separator (`acme-x`, `acme_x`, `acme.x`), not `acmebank-x`. An entry
//! that ends with a separator (`acme-`, `env_`) is a prefix. An entry with `*` is a glob (`acme-*`, `*-logs`);
//! `*` alone admits every name. An empty entry is refused.

use std::collections::{HashMap, HashSet, VecDeque};

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};
use regex_syntax::hir::{Capture, Class, ClassBytes, ClassBytesRange, ClassUnicode, ClassUnicodeRange};
use regex_syntax::hir::{Hir, HirKind, Repetition};

use super::BindingConfig;
use crate::config::{ConfigError, invalid};

// ------------------------------------------------------------------------------------------ allowlists

/// What separates the segments of an index or measurement name.
const SEPARATORS: [char; 3] = ['-', '_', '.'];

/// Whether one allowlist entry admits `name` (see the module header for the rules).
pub(crate) fn entry_admits(entry: &str, name: &str) -> bool {
    if entry.contains('*') {
        glob(entry.as_bytes(), name.as_bytes())
    } else if entry.ends_with(SEPARATORS) {
        name.starts_with(entry)
    } else {
        name.strip_prefix(entry)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(SEPARATORS))
    }
}

/// Whether any entry admits `name`.
pub(crate) fn allowed(entries: &[String], name: &str) -> bool {
    entries.iter().any(|e| entry_admits(e, name))
}

/// Refuses empty entries, naming the entry's key (`bindings[0].allowed_indices[2]`).
pub(super) fn check_entries(key: &str, entries: &[String]) -> Result<(), ConfigError> {
    match entries.iter().position(|e| e.is_empty()) {
        Some(i) => Err(invalid(
            &format!("{key}[{i}]"),
            "an empty entry; give a name (`acme`), a prefix ending with a separator (`acme-`), or a glob (`acme-*`, `*`)",
        )),
        None => Ok(()),
    }
}

/// `*` matches any run of characters (possibly empty); every other character matches itself.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and the position in `name` it is currently made to end at.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star {
            // Let the last `*` take one more character and try again from there.
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

// ------------------------------------------------------------------------------------------ topics

/// What a binding's topics are.
#[derive(Debug, Clone)]
pub enum TopicMatch {
    Name(String),
    Regex(TopicRegex),
}

/// A `topic_regex`, matching whole topic names.
#[derive(Debug, Clone)]
pub struct TopicRegex {
    /// As written, anchored at the start with `^` if it was not (`^client-.*`): the binding's default name.
    written: String,
    /// `^(?:...)$`: the whole name.
    whole: regex::Regex,
}

impl TopicRegex {
    /// Compiles a `topic_regex`.
    pub(super) fn new(pattern: &str) -> Result<Self, regex::Error> {
        let written = if pattern.starts_with('^') {
            pattern.to_string()
        } else {
            format!("^{pattern}")
        };
        // Alone first: a pattern that is not a regex of its own (`a)|(b`) could change meaning once wrapped.
        regex::Regex::new(&written)?;
        let whole = regex::Regex::new(&format!("^(?:{})$", body(&written)))?;
        Ok(Self { written, whole })
    }
}

/// The pattern without its leading `^`.
fn body(written: &str) -> &str {
    written.strip_prefix('^').unwrap_or(written)
}

impl TopicMatch {
    /// Whether `topic` is one of this binding's topics (regexes: the whole name).
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Self::Name(n) => n == topic,
            Self::Regex(r) => r.whole.is_match(topic),
        }
    }

    /// The subscription librdkafka understands: a name, or a regex starting with `^` (POSIX extended syntax
    /// on glibc, which has no `(?:`), anchored at the end too so that it selects the topics [`Self::matches`]
    /// does: `^(client-.*)$`.
    pub fn subscription(&self) -> String {
        match self {
            Self::Name(n) => n.clone(),
            Self::Regex(r) => format!("^({})$", body(&r.written)),
        }
    }

    /// As written (a regex anchored with `^` at the start): the default name of the binding.
    pub fn as_written(&self) -> &str {
        match self {
            Self::Name(n) => n,
            Self::Regex(r) => &r.written,
        }
    }
}

/// The one item whose topics match `topic` (`topics` says what an item's are): `Ok(None)` when none does,
/// `Err((i, j))` with the indices of the first two when several do: the topic belongs to no one then.
pub fn owner<'a, T>(
    items: &'a [T],
    topics: impl Fn(&T) -> &TopicMatch,
    topic: &str,
) -> Result<Option<&'a T>, (usize, usize)> {
    let mut matching = items
        .iter()
        .enumerate()
        .filter(|(_, item)| topics(item).matches(topic));
    match (matching.next(), matching.next()) {
        (None, _) => Ok(None),
        (Some((_, item)), None) => Ok(Some(item)),
        (Some((i, _)), Some((j, _))) => Err((i, j)),
    }
}

/// Kafka topic names: up to 249 characters, each of these.
const TOPIC_BYTES: &[u8] = b"-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
const TOPIC_RANGES: [(u8, u8); 5] = [
    (b'-', b'.'),
    (b'0', b'9'),
    (b'A', b'Z'),
    (b'_', b'_'),
    (b'a', b'z'),
];
const MAX_TOPIC_LEN: usize = 249;
/// Largest DFA (and memory to build it) compared statically; larger ones are left to the run-time check.
const DFA_SIZE_LIMIT: usize = 2 << 20;
/// Most pairs of states of two DFAs walked before the comparison is left to the run-time check.
const MAX_PAIRS: usize = 200_000;

/// Whether two bindings' topics overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Overlap {
    /// Both match this topic name (the shortest there is, for two regexes).
    On(String),
    Disjoint,
    /// Too large to decide when loading: the run-time check covers it.
    Undecided,
}

type Dfa = dense::DFA<Vec<u32>>;

/// The DFAs of the regex bindings, by index, each built at most once per validation (`None`: too large).
#[derive(Debug, Default)]
struct Dfas(HashMap<usize, Option<Dfa>>);

impl Dfas {
    fn build(&mut self, i: usize, r: &TopicRegex) {
        self.0.entry(i).or_insert_with(|| {
            // Parsed as `regex` parses it, then narrowed to what topic names may contain: the same topics, and a
            // far smaller DFA (`.` or `\w` over all of Unicode is thousands of states).
            let hir = regex_syntax::Parser::new().parse(r.whole.as_str()).ok()?;
            let nfa = thompson::Compiler::new()
                .build_from_hir(&topic_chars_only(hir))
                .ok()?;
            dense::Builder::new()
                .configure(
                    dense::DFA::config()
                        // Every string of the language, not only leftmost-first matches.
                        .match_kind(MatchKind::All)
                        .start_kind(StartKind::Anchored)
                        // Non-ASCII bytes quit; topic names have none.
                        .unicode_word_boundary(true)
                        .dfa_size_limit(Some(DFA_SIZE_LIMIT))
                        .determinize_size_limit(Some(DFA_SIZE_LIMIT)),
                )
                .build_from_nfa(&nfa)
                .ok()
        });
    }

    fn get(&self, i: usize) -> Option<&Dfa> {
        self.0.get(&i).and_then(Option::as_ref)
    }
}

/// `hir` with every class narrowed to the characters of topic names.
fn topic_chars_only(hir: Hir) -> Hir {
    match hir.into_kind() {
        HirKind::Empty => Hir::empty(),
        HirKind::Literal(l) => Hir::literal(l.0),
        HirKind::Look(l) => Hir::look(l),
        HirKind::Class(Class::Unicode(mut c)) => {
            c.intersect(&ClassUnicode::new(
                TOPIC_RANGES.map(|(a, b)| ClassUnicodeRange::new(char::from(a), char::from(b))),
            ));
            Hir::class(Class::Unicode(c))
        }
        HirKind::Class(Class::Bytes(mut c)) => {
            c.intersect(&ClassBytes::new(
                TOPIC_RANGES.map(|(a, b)| ClassBytesRange::new(a, b)),
            ));
            Hir::class(Class::Bytes(c))
        }
        HirKind::Repetition(r) => Hir::repetition(Repetition {
            sub: Box::new(topic_chars_only(*r.sub)),
            ..r
        }),
        HirKind::Capture(c) => Hir::capture(Capture {
            sub: Box::new(topic_chars_only(*c.sub)),
            ..c
        }),
        HirKind::Concat(subs) => Hir::concat(subs.into_iter().map(topic_chars_only).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.into_iter().map(topic_chars_only).collect()),
    }
}

/// Whether two regexes match a common topic name: a breadth-first walk of the product of their DFAs, so the
/// first common name found is a shortest one.
fn regexes_overlap(a: &Dfa, b: &Dfa) -> Overlap {
    let anchored = start::Config::new().anchored(Anchored::Yes);
    let (Ok(sa), Ok(sb)) = (a.start_state(&anchored), b.start_state(&anchored)) else {
        return Overlap::Undecided;
    };
    // Each pair of states reached: the pair it was reached from, the byte, its depth.
    let mut nodes: Vec<(StateID, StateID, usize, u8, usize)> = vec![(sa, sb, 0, 0, 0)];
    let mut seen: HashSet<(StateID, StateID)> = HashSet::from([(sa, sb)]);
    let mut queue = VecDeque::from([0usize]);
    while let Some(i) = queue.pop_front() {
        let (x, y, _, _, depth) = nodes[i];
        if a.is_match_state(a.next_eoi_state(x)) && b.is_match_state(b.next_eoi_state(y)) {
            let mut name = Vec::with_capacity(depth);
            let mut k = i;
            while k != 0 {
                name.push(nodes[k].3);
                k = nodes[k].2;
            }
            name.reverse();
            return Overlap::On(String::from_utf8_lossy(&name).into_owned());
        }
        if depth == MAX_TOPIC_LEN {
            continue;
        }
        for &byte in TOPIC_BYTES {
            let (nx, ny) = (a.next_state(x, byte), b.next_state(y, byte));
            if a.is_quit_state(nx) || b.is_quit_state(ny) {
                return Overlap::Undecided;
            }
            if a.is_dead_state(nx) || b.is_dead_state(ny) || !seen.insert((nx, ny)) {
                continue;
            }
            if nodes.len() == MAX_PAIRS {
                return Overlap::Undecided;
            }
            nodes.push((nx, ny, i, byte, depth + 1));
            queue.push_back(nodes.len() - 1);
        }
    }
    Overlap::Disjoint
}

/// Whether bindings `i` and `j` overlap.
fn overlap(bindings: &[BindingConfig], i: usize, j: usize, dfas: &mut Dfas) -> Overlap {
    let on = |t: &str| Overlap::On(t.to_string());
    match (&bindings[i].topics, &bindings[j].topics) {
        (TopicMatch::Name(a), TopicMatch::Name(b)) if a == b => on(a),
        (TopicMatch::Name(n), r @ TopicMatch::Regex(_)) | (r @ TopicMatch::Regex(_), TopicMatch::Name(n))
            if r.matches(n) =>
        {
            on(n)
        }
        (TopicMatch::Regex(a), TopicMatch::Regex(b)) => {
            dfas.build(i, a);
            dfas.build(j, b);
            match (dfas.get(i), dfas.get(j)) {
                (Some(da), Some(db)) => regexes_overlap(da, db),
                _ => Overlap::Undecided,
            }
        }
        _ => Overlap::Disjoint,
    }
}

/// Refuses bindings whose topics overlap, naming both; `what` prefixes the keys (`bindings[1].topic_regex`).
/// Pairs of regexes too large to decide are let through: the run-time check refuses their common topics.
pub(super) fn check_overlaps(bindings: &[BindingConfig], what: &str) -> Result<(), ConfigError> {
    let is_regex = |i: usize| matches!(bindings[i].topics, TopicMatch::Regex(_));
    // Equal names through a map: most bindings are names, and there may be hundreds.
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (j, b) in bindings.iter().enumerate() {
        if let TopicMatch::Name(n) = &b.topics
            && let Some(i) = names.insert(n, j)
        {
            return Err(overlap_error(bindings, what, i, j, n));
        }
    }
    // Each regex against every name, and against every regex before it.
    let mut dfas = Dfas::default();
    let regexes: Vec<usize> = (0..bindings.len()).filter(|i| is_regex(*i)).collect();
    for (k, &j) in regexes.iter().enumerate() {
        let names = (0..bindings.len()).filter(|i| !is_regex(*i));
        for i in regexes[..k].iter().copied().chain(names) {
            if let Overlap::On(topic) = overlap(bindings, i, j, &mut dfas) {
                return Err(overlap_error(bindings, what, i.min(j), i.max(j), &topic));
            }
        }
    }
    Ok(())
}

/// The error for bindings `i < j` that both match `topic`, keyed on the later one.
fn overlap_error(bindings: &[BindingConfig], what: &str, i: usize, j: usize, topic: &str) -> ConfigError {
    let field = match bindings[j].topics {
        TopicMatch::Name(_) => "topic",
        TopicMatch::Regex(_) => "topic_regex",
    };
    invalid(
        &format!("{what}[{j}].{field}"),
        format!(
            "bindings `{}` ({what}[{i}]) and `{}` ({what}[{j}]) both match topic `{topic}`; a topic must \
             belong to one binding",
            bindings[i].name, bindings[j].name
        ),
    )
}

#[cfg(test)]
mod tests;

//! Glob patterns for `file_change` paths and `git_push` branch names, with the globset
//! crate's syntax and meaning (the README documents them by that name), without its regex
//! engine.
//!
//! Why: globset compiles each glob to a regex and pulls in regex-automata, regex-syntax and
//! aho-corasick, about as much code as the rest of the daemon's matching needs many times
//! over. A glob is a tiny automaton; this module parses exactly as globset 0.4 does and runs
//! the pattern as a Thompson NFA over the path's characters, so matching is linear in the
//! path's length for any pattern (no backtracking blow-up on `*a*a*a*b`).
//!
//! Syntax: `?` one character, `*` any run of characters, `[abc]` `[a-z]` `[!a]` `[^a]`
//! classes, `{a,b}` alternatives (nestable; empty alternatives are dropped, as in globset),
//! `\` escapes the next character. With `literal_separator` (file_change) `?` and `*` never
//! match `/`, and `**` as a whole path component crosses directories: `**/x` (x in any
//! directory, also the root), `x/**` (anything under x), `a/**/b` (b under a at any depth);
//! elsewhere `**` is two `*`. A pattern that is `**` alone matches everything.

use std::fmt;

/// Why a pattern is invalid (globset's wording).
#[derive(Clone, Debug, PartialEq)]
pub enum GlobError {
    UnclosedClass,
    InvalidRange(char, char),
    UnopenedAlternates,
    UnclosedAlternates,
    DanglingEscape,
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GlobError::UnclosedClass => f.write_str("unclosed character class; missing ']'"),
            GlobError::InvalidRange(a, b) => write!(f, "invalid range; '{a}' > '{b}'"),
            GlobError::UnopenedAlternates => {
                f.write_str("unopened alternate group; missing '{' (maybe escape '}' with '[}]'?)")
            }
            GlobError::UnclosedAlternates => {
                f.write_str("unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?)")
            }
            GlobError::DanglingEscape => f.write_str("dangling '\\'"),
        }
    }
}

impl std::error::Error for GlobError {}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Literal(char),
    Any,
    ZeroOrMore,
    /// `**/` at the start: `(?:/?|.*/)`.
    RecursivePrefix,
    /// `/**` at the end: `/.*`.
    RecursiveSuffix,
    /// `/**/` in the middle: `(?:/|/.*/)`.
    RecursiveZeroOrMore,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Alternates(Vec<Vec<Token>>),
}

/// Parses like globset's `Parser` (0.4.21), token for token.
struct Parser<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    alternates_stack: Vec<usize>,
    branches: Vec<Vec<Token>>,
    prev: Option<char>,
    cur: Option<char>,
}

impl Parser<'_> {
    fn bump(&mut self) -> Option<char> {
        self.prev = self.cur;
        self.cur = self.chars.next();
        self.cur
    }

    fn push(&mut self, t: Token) -> Result<(), GlobError> {
        self.branches
            .last_mut()
            .ok_or(GlobError::UnopenedAlternates)?
            .push(t);
        Ok(())
    }

    fn parse(&mut self) -> Result<(), GlobError> {
        while let Some(c) = self.bump() {
            match c {
                '?' => self.push(Token::Any)?,
                '*' => self.star()?,
                '[' => self.class()?,
                '{' => {
                    self.alternates_stack.push(self.branches.len());
                    self.branches.push(Vec::new());
                }
                '}' => {
                    let start = self
                        .alternates_stack
                        .pop()
                        .ok_or(GlobError::UnopenedAlternates)?;
                    let alts = self.branches.drain(start..).collect();
                    self.push(Token::Alternates(alts))?;
                }
                ',' if !self.alternates_stack.is_empty() => self.branches.push(Vec::new()),
                '\\' => match self.bump() {
                    None => return Err(GlobError::DanglingEscape),
                    Some(c) => self.push(Token::Literal(c))?,
                },
                c => self.push(Token::Literal(c))?,
            }
        }
        Ok(())
    }

    fn star(&mut self) -> Result<(), GlobError> {
        let prev = self.prev;
        if self.chars.peek() != Some(&'*') {
            return self.push(Token::ZeroOrMore);
        }
        self.bump();
        let two = |p: &mut Self| {
            p.push(Token::ZeroOrMore)?;
            p.push(Token::ZeroOrMore)
        };
        let have_tokens = !self
            .branches
            .last()
            .ok_or(GlobError::UnopenedAlternates)?
            .is_empty();
        if !have_tokens {
            return match self.chars.peek() {
                None | Some('/') => {
                    self.bump();
                    self.push(Token::RecursivePrefix)
                }
                Some(_) => two(self),
            };
        }
        if prev != Some('/')
            && (self.branches.len() <= 1 || (prev != Some(',') && prev != Some('{')))
        {
            return two(self);
        }
        let is_suffix = match self.chars.peek() {
            None => true,
            Some(',') | Some('}') if self.branches.len() >= 2 => true,
            Some('/') => {
                self.bump();
                false
            }
            Some(_) => return two(self),
        };
        let last = self
            .branches
            .last_mut()
            .and_then(|b| b.pop())
            .ok_or(GlobError::UnopenedAlternates)?;
        self.push(match last {
            Token::RecursivePrefix => Token::RecursivePrefix,
            Token::RecursiveSuffix => Token::RecursiveSuffix,
            _ if is_suffix => Token::RecursiveSuffix,
            _ => Token::RecursiveZeroOrMore,
        })
    }

    fn class(&mut self) -> Result<(), GlobError> {
        let mut ranges: Vec<(char, char)> = Vec::new();
        let negated = matches!(self.chars.peek(), Some('!') | Some('^'));
        if negated {
            self.bump();
        }
        let mut first = true;
        let mut in_range = false;
        loop {
            let c = self.bump().ok_or(GlobError::UnclosedClass)?;
            match (c, ranges.last_mut()) {
                (']', _) if !first => break,
                ('-', _) if first => ranges.push(('-', '-')),
                ('-', Some(r)) if in_range => {
                    set_end(r, '-')?;
                    in_range = false;
                }
                ('-', _) => in_range = true,
                (c, Some(r)) if in_range => {
                    set_end(r, c)?;
                    in_range = false;
                }
                (c, _) => ranges.push((c, c)),
            }
            first = false;
        }
        if in_range {
            ranges.push(('-', '-'));
        }
        self.push(Token::Class { negated, ranges })
    }
}

fn set_end(r: &mut (char, char), end: char) -> Result<(), GlobError> {
    r.1 = end;
    if r.1 < r.0 {
        return Err(GlobError::InvalidRange(r.0, r.1));
    }
    Ok(())
}

fn parse(glob: &str) -> Result<Vec<Token>, GlobError> {
    let mut p = Parser {
        chars: glob.chars().peekable(),
        alternates_stack: Vec::new(),
        branches: vec![Vec::new()],
        prev: None,
        cur: None,
    };
    p.parse()?;
    match p.branches.len() {
        1 => Ok(p.branches.pop().unwrap_or_default()),
        _ => Err(GlobError::UnclosedAlternates),
    }
}

/// Checks a pattern's syntax.
pub fn validate(glob: &str) -> Result<(), GlobError> {
    parse(glob).map(|_| ())
}

/// One NFA instruction.
#[derive(Clone, Debug)]
enum Inst {
    /// Consume this character.
    Char(char),
    /// Consume any character (but `/` when the flag is set).
    Any {
        not_slash: bool,
    },
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// Continue at both.
    Split(usize, usize),
    Jmp(usize),
    Match,
}

/// A compiled set of patterns: matches when any of them matches the whole text.
#[derive(Clone, Debug)]
pub struct GlobSet {
    prog: Vec<Inst>,
    /// The program's entry points, one per pattern.
    starts: Vec<usize>,
}

struct Compiler {
    prog: Vec<Inst>,
    literal_separator: bool,
}

impl Compiler {
    fn emit(&mut self, i: Inst) -> usize {
        self.prog.push(i);
        self.prog.len() - 1
    }

    /// `x*` where `x` is one instruction.
    fn star_of(&mut self, x: Inst) {
        let split = self.emit(Inst::Split(0, 0));
        let body = self.emit(x);
        self.emit(Inst::Jmp(split));
        let after = self.prog.len();
        self.prog[split] = Inst::Split(body, after);
    }

    /// Whether `tokens` compile to nothing (globset drops such alternatives).
    fn empty(tokens: &[Token]) -> bool {
        tokens.iter().all(|t| match t {
            Token::Alternates(alts) => alts.iter().all(|a| Self::empty(a)),
            _ => false,
        })
    }

    fn seq(&mut self, tokens: &[Token]) {
        for t in tokens {
            self.token(t);
        }
    }

    /// `n` alternatives, compiled by `branch(compiler, i)`, each running to a common end.
    fn alternatives(&mut self, n: usize, mut branch: impl FnMut(&mut Compiler, usize)) {
        let mut jumps = Vec::new();
        for i in 0..n {
            if i + 1 < n {
                let split = self.emit(Inst::Split(0, 0));
                branch(self, i);
                jumps.push(self.emit(Inst::Jmp(0)));
                let next = self.prog.len();
                self.prog[split] = Inst::Split(split + 1, next);
            } else {
                branch(self, i);
            }
        }
        let end = self.prog.len();
        for j in jumps {
            self.prog[j] = Inst::Jmp(end);
        }
    }

    /// `.*/`: any characters, then a `/`.
    fn any_then_slash(&mut self) {
        self.star_of(Inst::Any { not_slash: false });
        self.emit(Inst::Char('/'));
    }

    fn token(&mut self, t: &Token) {
        let not_slash = self.literal_separator;
        match t {
            Token::Literal(c) => {
                self.emit(Inst::Char(*c));
            }
            Token::Any => {
                self.emit(Inst::Any { not_slash });
            }
            Token::ZeroOrMore => self.star_of(Inst::Any { not_slash }),
            // (?:/?|.*/)
            Token::RecursivePrefix => self.alternatives(3, |c, i| match i {
                0 => {
                    c.emit(Inst::Char('/'));
                }
                1 => {}
                _ => c.any_then_slash(),
            }),
            // /.*
            Token::RecursiveSuffix => {
                self.emit(Inst::Char('/'));
                self.star_of(Inst::Any { not_slash: false });
            }
            // (?:/|/.*/)
            Token::RecursiveZeroOrMore => {
                self.emit(Inst::Char('/'));
                self.alternatives(2, |c, i| {
                    if i == 1 {
                        c.any_then_slash();
                    }
                });
            }
            Token::Class { negated, ranges } => {
                self.emit(Inst::Class {
                    negated: *negated,
                    ranges: ranges.clone(),
                });
            }
            Token::Alternates(alts) => {
                let kept: Vec<&Vec<Token>> = alts.iter().filter(|a| !Self::empty(a)).collect();
                self.alternatives(kept.len(), |c, i| c.seq(kept[i]));
            }
        }
    }
}

impl GlobSet {
    /// Compiles `patterns`; `literal_separator`: `*` and `?` do not match `/`.
    pub fn new<S: AsRef<str>>(
        patterns: &[S],
        literal_separator: bool,
    ) -> Result<GlobSet, GlobError> {
        let mut c = Compiler {
            prog: Vec::new(),
            literal_separator,
        };
        let mut starts = Vec::new();
        for p in patterns {
            let tokens = parse(p.as_ref())?;
            starts.push(c.prog.len());
            if tokens == [Token::RecursivePrefix] {
                // `**` alone: everything.
                c.star_of(Inst::Any { not_slash: false });
            } else {
                c.seq(&tokens);
            }
            c.emit(Inst::Match);
        }
        Ok(GlobSet {
            prog: c.prog,
            starts,
        })
    }

    /// Whether any pattern matches all of `text`.
    pub fn is_match(&self, text: &str) -> bool {
        let n = self.prog.len();
        let mut cur: Vec<usize> = Vec::with_capacity(n);
        let mut next: Vec<usize> = Vec::with_capacity(n);
        // The step at which each instruction was last added: no duplicates per step.
        let mut seen = vec![usize::MAX; n];
        for &s in &self.starts {
            self.add(&mut cur, &mut seen, 0, s);
        }
        for (step, ch) in text.chars().enumerate() {
            next.clear();
            for &pc in &cur {
                let ok = match &self.prog[pc] {
                    Inst::Char(c) => *c == ch,
                    Inst::Any { not_slash } => !(*not_slash && ch == '/'),
                    Inst::Class { negated, ranges } => {
                        ranges.iter().any(|&(a, b)| a <= ch && ch <= b) != *negated
                    }
                    _ => false,
                };
                if ok {
                    self.add(&mut next, &mut seen, step + 1, pc + 1);
                }
            }
            std::mem::swap(&mut cur, &mut next);
            if cur.is_empty() {
                return false;
            }
        }
        cur.iter().any(|&pc| matches!(self.prog[pc], Inst::Match))
    }

    /// Adds `pc` and what it reaches without consuming a character.
    fn add(&self, list: &mut Vec<usize>, seen: &mut [usize], step: usize, pc: usize) {
        let mut stack = vec![pc];
        while let Some(pc) = stack.pop() {
            if pc >= self.prog.len() || seen[pc] == step {
                continue;
            }
            seen[pc] = step;
            match self.prog[pc] {
                Inst::Split(a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
                Inst::Jmp(t) => stack.push(t),
                _ => list.push(pc),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pats: &[&str], path: &str) -> bool {
        GlobSet::new(pats, true).unwrap().is_match(path)
    }

    fn branch(pat: &str, b: &str) -> bool {
        GlobSet::new(&[pat], false).unwrap().is_match(b)
    }

    /// The semantics the README documents for file_change patterns.
    #[test]
    fn documented_file_semantics() {
        assert!(files(&["src/**/*.rs"], "src/main.rs"));
        assert!(files(&["src/**/*.rs"], "src/a/b/c.rs"));
        assert!(!files(&["src/**/*.rs"], "lib/c.rs"));
        assert!(!files(&["src/**/*.rs"], "src/a/b/c.rs.bak"));
        assert!(files(&["*.md"], "README.md"));
        assert!(!files(&["*.md"], "docs/x.md"));
        assert!(files(&["**/*.md"], "README.md"));
        assert!(files(&["**/*.md"], "docs/a/x.md"));
        assert!(files(&["docs/**"], "docs/a/x.md"));
        assert!(!files(&["docs/**"], "docs"));
        assert!(files(&["**"], "any/thing/at/all"));
        assert!(files(&["a/**/b"], "a/b"));
        assert!(files(&["a/**/b"], "a/x/y/b"));
        assert!(!files(&["a/**/b"], "a/xb"));
        assert!(files(&["src/*.rs", "Cargo.toml"], "Cargo.toml"));
        assert!(!files(&["src/*.rs"], "src/a/b.rs"));
        assert!(files(&["file?.txt"], "file1.txt"));
        assert!(!files(&["file?.txt"], "file/.txt"));
        assert!(files(&["[abc].txt"], "b.txt"));
        assert!(!files(&["[abc].txt"], "d.txt"));
        assert!(files(&["[!abc].txt"], "d.txt"));
        assert!(files(&["[a-c]x"], "bx"));
        assert!(files(&["*.{rs,toml}"], "Cargo.toml"));
        assert!(files(&["*.{rs,toml}"], "main.rs"));
        assert!(!files(&["*.{rs,toml}"], "main.py"));
        assert!(files(&["\\*.txt"], "*.txt"));
        assert!(!files(&["\\*.txt"], "a.txt"));
        // `**` not a whole component is two `*`.
        assert!(files(&["a**"], "abc"));
        assert!(!files(&["a**"], "a/bc"));
        assert!(files(&["héllo/*"], "héllo/wörld"));
    }

    #[test]
    fn branch_semantics() {
        assert!(branch("feature/*", "feature/login"));
        assert!(branch("*", "feature/a/b"));
        assert!(!branch("feature/*", "main"));
        assert!(branch("release-?", "release-1"));
        assert!(branch("{main,release/*}", "release/2.0"));
    }

    #[test]
    fn errors_are_globsets() {
        assert_eq!(validate("[ab"), Err(GlobError::UnclosedClass));
        assert_eq!(validate("[z-a]"), Err(GlobError::InvalidRange('z', 'a')));
        assert_eq!(validate("a}"), Err(GlobError::UnopenedAlternates));
        assert_eq!(validate("{a,b"), Err(GlobError::UnclosedAlternates));
        assert_eq!(validate("{a,{b,c}"), Err(GlobError::UnclosedAlternates));
        assert_eq!(validate("a\\"), Err(GlobError::DanglingEscape));
        assert_eq!(
            GlobError::UnclosedClass.to_string(),
            "unclosed character class; missing ']'"
        );
        assert!(validate("{a,{b,c}}").is_ok());
    }

    /// Linear time: a pattern that makes a backtracking matcher take exponential time.
    #[test]
    fn no_backtracking_blowup() {
        let pat = "*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let text = "a".repeat(5000);
        assert!(!files(&[pat], &text));
        assert!(files(&[pat], &format!("{text}b")));
    }

    /// Against globset itself (the dev-dependency oracle): random patterns over a small
    /// alphabet rich in the special characters, random paths, both separator modes.
    #[test]
    fn agrees_with_globset() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        const PAT: &[&str] = &[
            "a",
            "b",
            "/",
            "*",
            "**",
            "?",
            "[ab]",
            "[!a]",
            "[a-c]",
            "{a,b}",
            "{,a}",
            "{a/**,b}",
            "{**/a,b}",
            ",",
            "\\*",
            ".",
            "-",
            "[]a]",
            "{a,{b,c}}",
            "x",
        ];
        const TXT: &[&str] = &["a", "b", "c", "/", ".", "-", "*", ",", "]", "x"];
        let (mut checked, mut matched) = (0, 0);
        for _ in 0..4000 {
            let pat: String = (0..1 + rnd(6)).map(|_| PAT[rnd(PAT.len())]).collect();
            for sep in [true, false] {
                let theirs = globset::GlobBuilder::new(&pat)
                    .literal_separator(sep)
                    .build()
                    .map(|g| g.compile_matcher());
                let ours = GlobSet::new(&[&pat], sep);
                assert_eq!(ours.is_ok(), theirs.is_ok(), "{pat:?}");
                let (Ok(ours), Ok(theirs)) = (ours, theirs) else {
                    continue;
                };
                for _ in 0..30 {
                    let t: String = (0..rnd(8)).map(|_| TXT[rnd(TXT.len())]).collect();
                    let want = theirs.is_match(&t);
                    assert_eq!(ours.is_match(&t), want, "{pat:?} on {t:?} (sep {sep})");
                    checked += 1;
                    matched += usize::from(want);
                }
            }
        }
        assert!(checked > 100_000 && matched > 5_000, "{checked} {matched}");
    }
}

//! IANA time zones without a compiled-in database: the system's tz database (TZif files,
//! RFC 8536) where there is one, else a table of each zone's current POSIX TZ rule.
//!
//! Why: chrono-tz compiles the whole history of every zone into the binary (about 1 MB of
//! code and data), while the cron scheduler only ever asks about now and the future, and
//! every Unix the daemon runs on ships the tz database that its other programs use. Reading
//! it also means a tzdata update reaches the daemon at its next start without a rebuild.
//!
//! Where a name is looked up, in order:
//! 1. `$TZDIR/NAME`, then `/usr/share/zoneinfo`, `/usr/lib/zoneinfo`,
//!    `/usr/share/lib/zoneinfo` and `/etc/zoneinfo` (Linux distributions, macOS, the BSDs,
//!    NixOS): the full history of the zone, and the footer rule after its last transition;
//! 2. otherwise (Windows, containers without tzdata, a name newer than the system's tzdata)
//!    the built-in table [`super::tz_fallback`]: the POSIX rule the zone follows after its
//!    last rule change, exact for every instant from then on, which is all a scheduler asks
//!    about (`Europe/Berlin` is `CET-1CEST,M3.5.0,M10.5.0/3` since 1996). It is regenerated
//!    from tzdata by `contrib/tz/gen_fallback.py`.
//!
//! Names are case-sensitive everywhere (as in tzdata), also on case-insensitive file
//! systems. Files with leap-second records (`right/…`) are refused. A zone is read once
//! per process and shared.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use super::tz_fallback::ZONES;

/// Directories searched after `$TZDIR`.
const SYSTEM_DIRS: &[&str] = &[
    "/usr/share/zoneinfo",
    "/usr/lib/zoneinfo",
    "/usr/share/lib/zoneinfo",
    "/etc/zoneinfo",
];

/// Largest TZif file read (the biggest in tzdata is under 4 KiB).
const MAX_FILE: u64 = 256 * 1024;

/// A named zone: the UTC offset in effect at any instant.
pub struct Tz {
    name: String,
    /// Transition instants (Unix seconds), strictly ascending.
    transitions: Vec<i64>,
    /// The UTC offset (seconds east) from each transition on.
    after: Vec<i32>,
    /// The offset before the first transition.
    initial: i32,
    /// The rule after the last transition (or always, without transitions).
    rule: Option<Rule>,
    /// Every offset the zone ever has, sorted and distinct.
    offsets: Vec<i32>,
}

impl PartialEq for Tz {
    fn eq(&self, other: &Tz) -> bool {
        self.name == other.name
    }
}

impl std::fmt::Debug for Tz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tz({})", self.name)
    }
}

impl Tz {
    /// The zone called `name`, from the system's tz database or the built-in table; `None`
    /// if neither knows it.
    pub fn named(name: &str) -> Option<Arc<Tz>> {
        static CACHE: OnceLock<Mutex<HashMap<String, Arc<Tz>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(tz) = cache.lock().ok()?.get(name) {
            return Some(tz.clone());
        }
        let tz = Arc::new(Tz::load(name)?);
        if let Ok(mut c) = cache.lock() {
            c.insert(name.to_string(), tz.clone());
        }
        Some(tz)
    }

    fn load(name: &str) -> Option<Tz> {
        if !valid_name(name) {
            return None;
        }
        let listed = ZONES.binary_search_by(|(n, _, _)| (*n).cmp(name));
        if listed.is_err() && ZONES.iter().any(|(n, _, _)| n.eq_ignore_ascii_case(name)) {
            // `europe/berlin` would open on a case-insensitive file system only.
            return None;
        }
        let dirs = std::env::var_os("TZDIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .into_iter()
            .chain(SYSTEM_DIRS.iter().map(PathBuf::from));
        for dir in dirs {
            if let Some(tz) = read_file(&dir.join(name)).and_then(|b| Tz::from_tzif(name, &b)) {
                return Some(tz);
            }
        }
        Tz::from_table(ZONES.get(listed.ok()?)?)
    }

    /// A zone of the built-in table.
    fn from_table(&(name, rule, changes): &super::tz_fallback::Zone) -> Option<Tz> {
        let rule = Rule::parse(rule)?;
        let initial = changes.first().map_or(rule.std, |c| c.1);
        let (transitions, after) = changes.iter().copied().unzip();
        Some(Tz::new(name, transitions, after, initial, Some(rule)))
    }

    /// A zone that follows the POSIX TZ rule `rule` at every instant.
    #[cfg(test)]
    fn from_rule(name: &str, rule: &str) -> Option<Tz> {
        let rule = Rule::parse(rule)?;
        Some(Tz::new(name, Vec::new(), Vec::new(), rule.std, Some(rule)))
    }

    fn new(
        name: &str,
        transitions: Vec<i64>,
        after: Vec<i32>,
        initial: i32,
        rule: Option<Rule>,
    ) -> Tz {
        let mut offsets: Vec<i32> = after.iter().copied().chain([initial]).collect();
        if let Some(r) = &rule {
            offsets.push(r.std);
            offsets.extend(r.dst.as_ref().map(|d| d.offset));
        }
        offsets.sort_unstable();
        offsets.dedup();
        Tz {
            name: name.to_string(),
            transitions,
            after,
            initial,
            rule,
            offsets,
        }
    }

    /// Parses a TZif file (versions 1 to 4).
    pub fn from_tzif(name: &str, b: &[u8]) -> Option<Tz> {
        let (h, body) = Header::parse(b)?;
        let (h, body, time_size) = if h.version >= b'2' {
            // Skip the 32-bit block; the 64-bit one follows with its own header.
            let rest = body.get(h.block_len(4)?..)?;
            let (h2, body2) = Header::parse(rest)?;
            (h2, body2, 8)
        } else {
            (h, body, 4)
        };
        if h.leapcnt != 0 || h.typecnt == 0 {
            return None;
        }
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let s = body.get(at..at.checked_add(n)?)?;
            at += n;
            Some(s)
        };
        let times = take(h.timecnt.checked_mul(time_size)?)?;
        let idx = take(h.timecnt)?;
        let types = take(h.typecnt.checked_mul(6)?)?;
        take(h.charcnt)?;
        take(h.isstdcnt)?;
        take(h.isutcnt)?;
        let footer = body.get(at..).unwrap_or_default();

        let utoffs: Vec<i32> = types
            .chunks_exact(6)
            .map(|t| i32::from_be_bytes([t[0], t[1], t[2], t[3]]))
            .collect();
        if utoffs.iter().any(|o| !valid_offset(*o)) {
            return None;
        }
        let transitions: Vec<i64> = times
            .chunks_exact(time_size)
            .map(|c| match *c {
                [a, b, c, d] => i64::from(i32::from_be_bytes([a, b, c, d])),
                [a, b, c, d, e, f, g, h] => i64::from_be_bytes([a, b, c, d, e, f, g, h]),
                _ => 0,
            })
            .collect();
        if transitions.windows(2).any(|w| w[0] >= w[1]) {
            return None;
        }
        let after = idx
            .iter()
            .map(|&i| utoffs.get(usize::from(i)).copied())
            .collect::<Option<Vec<i32>>>()?;
        let rule = if time_size == 8 {
            // "\n<rule>\n"; an empty rule means "no rule" (the last type stays).
            let text = footer.strip_prefix(b"\n")?;
            let end = text.iter().position(|&c| c == b'\n')?;
            let text = std::str::from_utf8(&text[..end]).ok()?;
            if text.is_empty() {
                None
            } else {
                Some(Rule::parse(text)?)
            }
        } else {
            None
        };
        Some(Tz::new(name, transitions, after, utoffs[0], rule))
    }

    /// The IANA name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The UTC offset (seconds east) in effect at Unix time `t`.
    pub fn offset_at(&self, t: i64) -> i32 {
        let i = self.transitions.partition_point(|&x| x <= t);
        if i == self.transitions.len() {
            if let Some(r) = &self.rule {
                return r.offset_at(t);
            }
        }
        match i {
            0 => self.initial,
            i => self.after[i - 1],
        }
    }

    /// The Unix times (ascending) whose local time is `wall` (local seconds since the
    /// epoch): none in a gap, two in a repeated stretch.
    pub fn instants_of(&self, wall: i64) -> Vec<i64> {
        // t is such an instant iff t + offset_at(t) == wall, so t = wall - o for one of
        // the zone's offsets o: try each.
        let mut out: Vec<i64> = self
            .offsets
            .iter()
            .map(|&o| wall - i64::from(o))
            .filter(|&t| i64::from(self.offset_at(t)) == wall - t)
            .collect();
        out.sort_unstable();
        out
    }
}

fn valid_offset(o: i32) -> bool {
    // chrono's FixedOffset takes less than a day either way; real zones stay within ±15 h.
    o.unsigned_abs() < 86_400
}

/// IANA-shaped names only: no absolute paths, no `.` or `..` components.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b))
        })
}

fn read_file(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut b = Vec::new();
    f.take(MAX_FILE).read_to_end(&mut b).ok()?;
    Some(b)
}

struct Header {
    version: u8,
    isutcnt: usize,
    isstdcnt: usize,
    leapcnt: usize,
    timecnt: usize,
    typecnt: usize,
    charcnt: usize,
}

impl Header {
    fn parse(b: &[u8]) -> Option<(Header, &[u8])> {
        if b.get(..4)? != b"TZif" {
            return None;
        }
        let n = |i: usize| -> Option<usize> {
            let s = b.get(20 + 4 * i..24 + 4 * i)?;
            usize::try_from(u32::from_be_bytes([s[0], s[1], s[2], s[3]])).ok()
        };
        let h = Header {
            version: *b.get(4)?,
            isutcnt: n(0)?,
            isstdcnt: n(1)?,
            leapcnt: n(2)?,
            timecnt: n(3)?,
            typecnt: n(4)?,
            charcnt: n(5)?,
        };
        Some((h, b.get(44..)?))
    }

    /// Length of the data block with `time_size`-byte times.
    fn block_len(&self, time_size: usize) -> Option<usize> {
        [
            self.timecnt.checked_mul(time_size)?,
            self.timecnt,
            self.typecnt.checked_mul(6)?,
            self.charcnt,
            self.leapcnt.checked_mul(time_size + 4)?,
            self.isstdcnt,
            self.isutcnt,
        ]
        .iter()
        .try_fold(0usize, |a, &n| a.checked_add(n))
    }
}

/// A POSIX TZ rule (`CET-1CEST,M3.5.0,M10.5.0/3`), with RFC 8536's extensions (hours
/// from -167 to 167 in transition times).
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Standard time's offset, seconds east of UTC.
    std: i32,
    dst: Option<Dst>,
}

#[derive(Clone, Debug, PartialEq)]
struct Dst {
    offset: i32,
    /// When DST starts (local standard time) and ends (local DST).
    start: (Day, i32),
    end: (Day, i32),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Day {
    /// `Jn`: 1..=365, February 29 never counted.
    Julian1(u16),
    /// `n`: 0..=365, February 29 counted.
    Julian0(u16),
    /// `Mm.w.d`: month 1..=12, week 1..=5 (5 = last), weekday 0..=6 (Sunday = 0).
    Mwd(u8, u8, u8),
}

impl Rule {
    pub fn parse(s: &str) -> Option<Rule> {
        let mut p = Cursor(s.as_bytes());
        p.name()?;
        // POSIX offsets count west of UTC.
        let std = -p.hms(24)?;
        if p.0.is_empty() {
            return Some(Rule { std, dst: None });
        }
        p.name()?;
        let offset = match p.0.first() {
            Some(b',') | None => std + 3600,
            _ => -p.hms(24)?,
        };
        if !valid_offset(std) || !valid_offset(offset) {
            return None;
        }
        let (start, end) = if p.0.is_empty() {
            // POSIX leaves the default rule to the implementation; this is glibc's (US).
            ((Day::Mwd(3, 2, 0), 7200), (Day::Mwd(11, 1, 0), 7200))
        } else {
            p.eat(b',')?;
            let start = p.transition()?;
            p.eat(b',')?;
            let end = p.transition()?;
            (start, end)
        };
        if !p.0.is_empty() {
            return None;
        }
        Some(Rule {
            std,
            dst: Some(Dst { offset, start, end }),
        })
    }

    fn offset_at(&self, t: i64) -> i32 {
        let Some(d) = &self.dst else {
            return self.std;
        };
        let year = civil_from_days((t + i64::from(self.std)).div_euclid(86_400)).0;
        let start = rule_instant(year, d.start, self.std);
        let end = rule_instant(year, d.end, d.offset);
        let in_dst = if start < end {
            start <= t && t < end
        } else {
            // Southern hemisphere: DST spans the new year.
            !(end <= t && t < start)
        };
        if in_dst {
            d.offset
        } else {
            self.std
        }
    }
}

/// The Unix time at which `day` at `secs` past local midnight happens in `year`, in local
/// time of offset `offset`.
fn rule_instant(year: i64, (day, secs): (Day, i32), offset: i32) -> i64 {
    let jan1 = days_from_civil(year, 1, 1);
    let leap = is_leap(year);
    let day = match day {
        Day::Julian1(n) => {
            let n = i64::from(n) - 1;
            jan1 + n + i64::from(leap && n >= 59)
        }
        Day::Julian0(n) => jan1 + i64::from(n),
        Day::Mwd(m, w, wd) => {
            let first = days_from_civil(year, i64::from(m), 1);
            // 1970-01-01 was a Thursday (4).
            let first_wd = (first + 4).rem_euclid(7);
            let mut d = (i64::from(wd) - first_wd).rem_euclid(7) + 7 * (i64::from(w) - 1);
            let len = days_in_month(year, m);
            while d >= len {
                d -= 7;
            }
            first + d
        }
    };
    day * 86_400 + i64::from(secs) - i64::from(offset)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: u8) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a count of days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn eat(&mut self, c: u8) -> Option<()> {
        let rest = self.0.strip_prefix(&[c])?;
        self.0 = rest;
        Some(())
    }

    /// A zone abbreviation: 3+ letters, or `<…>` with letters, digits, `+` and `-`.
    fn name(&mut self) -> Option<()> {
        if self.eat(b'<').is_some() {
            let end = self.0.iter().position(|&c| c == b'>')?;
            let ok = self.0[..end]
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'-');
            (end >= 3 && ok).then_some(())?;
            self.0 = &self.0[end + 1..];
        } else {
            let n = self
                .0
                .iter()
                .take_while(|c| c.is_ascii_alphabetic())
                .count();
            (n >= 3).then_some(())?;
            self.0 = &self.0[n..];
        }
        Some(())
    }

    fn number(&mut self, max: i64) -> Option<i64> {
        let n = self.0.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 3 {
            return None;
        }
        let v = std::str::from_utf8(&self.0[..n]).ok()?.parse().ok()?;
        self.0 = &self.0[n..];
        (v <= max).then_some(v)
    }

    /// `[+-]hh[:mm[:ss]]` in seconds, hours at most `max_h`.
    fn hms(&mut self, max_h: i64) -> Option<i32> {
        let sign = match self.0.first() {
            Some(b'-') => {
                self.0 = &self.0[1..];
                -1
            }
            Some(b'+') => {
                self.0 = &self.0[1..];
                1
            }
            _ => 1,
        };
        let mut secs = self.number(max_h)? * 3600;
        if self.eat(b':').is_some() {
            secs += self.number(59)? * 60;
            if self.eat(b':').is_some() {
                secs += self.number(59)?;
            }
        }
        i32::try_from(sign * secs).ok()
    }

    fn transition(&mut self) -> Option<(Day, i32)> {
        let day = if self.eat(b'J').is_some() {
            Day::Julian1(u16::try_from(self.number(365)?).ok().filter(|n| *n >= 1)?)
        } else if self.eat(b'M').is_some() {
            let m = self.number(12)?;
            self.eat(b'.')?;
            let w = self.number(5)?;
            self.eat(b'.')?;
            let d = self.number(6)?;
            if m == 0 || w == 0 {
                return None;
            }
            Day::Mwd(m as u8, w as u8, d as u8)
        } else {
            Day::Julian0(u16::try_from(self.number(365)?).ok()?)
        };
        let secs = if self.eat(b'/').is_some() {
            self.hms(167)?
        } else {
            7200
        };
        Some((day, secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;

    /// Unix time of a UTC date and time.
    fn utc(y: i64, mo: i64, d: i64, h: i64, mi: i64) -> i64 {
        days_from_civil(y, mo, d) * 86_400 + h * H + mi * 60
    }

    fn rule(s: &str) -> Tz {
        Tz::from_rule("test", s).unwrap_or_else(|| panic!("{s} did not parse"))
    }

    #[test]
    fn civil_dates_round_trip() {
        for z in [-800_000, -1, 0, 1, 59, 10_956, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(days_from_civil(2028, 2, 29)), (2028, 2, 29));
    }

    #[test]
    fn rules_parse_and_refuse() {
        for ok in [
            "UTC0",
            "GMT0",
            "<-03>3",
            "<+0545>-5:45",
            "CET-1CEST,M3.5.0,M10.5.0/3",
            "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0",
            "IST-1GMT0,M10.5.0,M3.5.0/1",
            "<-02>2<-01>,M3.5.0/-1,M10.5.0/0",
            "EET-2EEST,M3.4.4/50,M10.4.4/50",
            "EST5EDT,0/0,J365/25",
            "EST5EDT",
        ] {
            assert!(Rule::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "C0",
            "CET",
            "CET-1CEST,M3.5.0",
            "CET-1CEST,M13.5.0,M10.5.0",
            "CET-1CEST,M3.6.0,M10.5.0",
            "CET-1CEST,M3.5.7,M10.5.0",
            "CET-1CEST,J0,J365",
            "CET-1CEST,M3.5.0,M10.5.0/168",
            "CET-25",
            "<AB>1",
            "<+03",
            "CET-1CEST,M3.5.0,M10.5.0x",
        ] {
            assert!(Rule::parse(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn berlin_rule_transitions() {
        let z = rule("CET-1CEST,M3.5.0,M10.5.0/3");
        // 2026-03-29 01:00 UTC (02:00 CET) and 2026-10-25 01:00 UTC (03:00 CEST).
        assert_eq!(z.offset_at(utc(2026, 3, 29, 0, 59) + 59), 3600);
        assert_eq!(z.offset_at(utc(2026, 3, 29, 1, 0)), 7200);
        assert_eq!(z.offset_at(utc(2026, 10, 25, 0, 59) + 59), 7200);
        assert_eq!(z.offset_at(utc(2026, 10, 25, 1, 0)), 3600);
        // Local 02:30 on the spring day does not exist; on the autumn day it happens twice.
        let wall = |y, mo, d, h, mi| utc(y, mo, d, h, mi);
        assert!(z.instants_of(wall(2026, 3, 29, 2, 30)).is_empty());
        assert_eq!(
            z.instants_of(wall(2026, 10, 25, 2, 30)),
            [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)]
        );
        assert_eq!(
            z.instants_of(wall(2026, 7, 1, 12, 0)),
            [utc(2026, 7, 1, 10, 0)]
        );
    }

    #[test]
    fn southern_and_half_hour_and_negative_dst() {
        // Sydney: DST from the first Sunday of October to the first Sunday of April.
        let syd = rule("AEST-10AEDT,M10.1.0,M4.1.0/3");
        assert_eq!(syd.offset_at(utc(2026, 1, 15, 0, 0)), 11 * 3600);
        assert_eq!(syd.offset_at(utc(2026, 6, 15, 0, 0)), 10 * 3600);
        // 2026-04-05 03:00 AEDT = 2026-04-04 16:00 UTC.
        assert_eq!(syd.offset_at(utc(2026, 4, 4, 15, 59)), 11 * 3600);
        assert_eq!(syd.offset_at(utc(2026, 4, 4, 16, 0)), 10 * 3600);
        // Lord Howe: a 30-minute shift; 02:00 local on 2026-10-04 jumps to 02:30.
        let lh = rule("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0");
        assert!(lh.instants_of(utc(2026, 10, 4, 2, 15)).is_empty());
        assert_eq!(lh.instants_of(utc(2026, 10, 4, 2, 30)).len(), 1);
        assert_eq!(lh.instants_of(utc(2026, 4, 5, 1, 45)).len(), 2);
        // Dublin: winter is the "daylight" period (negative DST), 1 h.
        let dub = rule("IST-1GMT0,M10.5.0,M3.5.0/1");
        assert_eq!(dub.offset_at(utc(2026, 1, 15, 0, 0)), 0);
        assert_eq!(dub.offset_at(utc(2026, 7, 15, 0, 0)), 3600);
        // Nuuk: transitions at -1:00 and 0:00 local, on the last Sunday's eve.
        let nuuk = rule("<-02>2<-01>,M3.5.0/-1,M10.5.0/0");
        // 2026-03-29 -01:00 local (-02) = 2026-03-28 23:00 local = 2026-03-29 01:00 UTC.
        assert_eq!(nuuk.offset_at(utc(2026, 3, 29, 0, 59)), -2 * 3600);
        assert_eq!(nuuk.offset_at(utc(2026, 3, 29, 1, 0)), -3600);
        // Permanent DST written as a rule covering the whole year.
        let all = rule("EST5EDT,0/0,J365/25");
        for m in 1..=12 {
            assert_eq!(all.offset_at(utc(2026, m, 1, 0, 0)), -4 * 3600);
        }
        // A fixed offset.
        assert_eq!(rule("<+0545>-5:45").offset_at(0), 5 * 3600 + 45 * 60);
    }

    #[test]
    fn names_are_checked() {
        for bad in [
            "",
            "/etc/passwd",
            "../etc/passwd",
            "Europe/../..",
            "a//b",
            "x y",
        ] {
            assert!(!valid_name(bad), "{bad}");
            assert!(Tz::named(bad).is_none(), "{bad}");
        }
        assert!(Tz::named("Mars/Base").is_none());
        assert!(Tz::named("europe/berlin").is_none());
        assert_eq!(
            Tz::named("Europe/Berlin")
                .map(|z| z.name().to_string())
                .as_deref(),
            Some("Europe/Berlin")
        );
    }

    #[test]
    fn malformed_tzif_is_refused_not_a_panic() {
        let good = std::fs::read("/usr/share/zoneinfo/Europe/Berlin").ok();
        let mut inputs: Vec<Vec<u8>> = vec![b"".to_vec(), b"TZif".to_vec(), b"TZif2".to_vec()];
        if let Some(g) = &good {
            assert!(Tz::from_tzif("Europe/Berlin", g).is_some());
            for cut in [5, 44, 60, 200, g.len() / 2, g.len() - 2] {
                inputs.push(g[..cut].to_vec());
            }
            let mut huge = g.clone();
            huge[32..36].copy_from_slice(&u32::MAX.to_be_bytes());
            inputs.push(huge);
        }
        for i in inputs {
            assert!(Tz::from_tzif("x", &i).is_none(), "{} bytes", i.len());
        }
    }

    /// Compares `ours` with chrono-tz over `[from, to)`: the offset every 4 hours, and where
    /// it changes, every minute of the 4 hours before, with both the old and the new offset's
    /// wall times mapped back to instants (gaps and repeats). Returns the samples checked.
    fn compare(ours: &Tz, ct: chrono_tz::Tz, from: i64, to: i64) -> usize {
        const STEP: i64 = 4 * 3600;
        use chrono::{Offset, TimeZone};
        let name = ours.name();
        let theirs = |t: i64| {
            let dt = chrono::DateTime::from_timestamp(t, 0).unwrap().naive_utc();
            ct.offset_from_utc_datetime(&dt).fix().local_minus_utc()
        };
        let instants = |wall: i64| -> Vec<i64> {
            let w = chrono::DateTime::from_timestamp(wall, 0)
                .unwrap()
                .naive_utc();
            match ct.from_local_datetime(&w) {
                chrono::LocalResult::Single(a) => vec![a.timestamp()],
                chrono::LocalResult::Ambiguous(a, b) => {
                    let mut v = vec![a.timestamp(), b.timestamp()];
                    v.sort_unstable();
                    v
                }
                chrono::LocalResult::None => vec![],
            }
        };
        let mut n = 0;
        let mut prev = theirs(from);
        let mut t = from;
        while t < to {
            let off = theirs(t);
            assert_eq!(ours.offset_at(t), off, "{name} at {t}");
            let wall = t + i64::from(off);
            assert_eq!(ours.instants_of(wall), instants(wall), "{name} wall {wall}");
            if off != prev {
                for m in (t - STEP..t).step_by(60) {
                    assert_eq!(ours.offset_at(m), theirs(m), "{name} at {m}");
                    for o in [prev, off] {
                        let wall = m + i64::from(o);
                        assert_eq!(ours.instants_of(wall), instants(wall), "{name} wall {wall}");
                    }
                    n += 1;
                }
            }
            prev = off;
            t += STEP;
            n += 1;
        }
        n
    }

    /// The built-in table's rules against chrono-tz's compiled database (the same tzdata
    /// release), 2026 to 2027, every zone.
    #[test]
    fn fallback_table_agrees_with_chrono_tz() {
        assert!(ZONES.len() > 590);
        assert!(
            ZONES.windows(2).all(|w| w[0].0 < w[1].0),
            "table not sorted"
        );
        // Morocco's Ramadan changes are listed, not a rule.
        let casablanca = ZONES.iter().find(|z| z.0 == "Africa/Casablanca").unwrap();
        assert!(casablanca.2.len() > 100);
        let mut with_dst = 0;
        for zone in ZONES {
            let Ok(ct) = zone.0.parse::<chrono_tz::Tz>() else {
                assert_eq!(zone.0, "Factory");
                continue;
            };
            let ours = Tz::from_table(zone).unwrap_or_else(|| panic!("{zone:?}"));
            compare(&ours, ct, utc(2026, 1, 1, 0, 0), utc(2028, 1, 1, 0, 0));
            with_dst += usize::from(ours.offsets.len() > 1);
        }
        assert!(with_dst > 100, "{with_dst} zones with DST");
    }

    /// System TZif files against chrono-tz, 1970 to 2040, for zones with DST in both
    /// hemispheres, half-hour shifts, negative DST, changes at odd local times and history.
    #[test]
    fn system_files_agree_with_chrono_tz() {
        // Linux machines that run the tests have tzdata (.ci/run's do); elsewhere, skip.
        let have = std::path::Path::new("/usr/share/zoneinfo/Europe/Berlin").exists();
        if !have && !cfg!(target_os = "linux") {
            return;
        }
        for name in [
            "Europe/Berlin",
            "America/New_York",
            "Australia/Sydney",
            "Australia/Lord_Howe",
            "Europe/Dublin",
            "America/Sao_Paulo",
            "Pacific/Chatham",
            "Asia/Kolkata",
            "America/Nuuk",
            "Antarctica/Troll",
            "Africa/Casablanca",
            "America/Santiago",
            "Asia/Jerusalem",
        ] {
            let ct: chrono_tz::Tz = name.parse().unwrap();
            let b = std::fs::read(format!("/usr/share/zoneinfo/{name}")).unwrap();
            let ours = Tz::from_tzif(name, &b).unwrap_or_else(|| panic!("{name}"));
            let n = compare(&ours, ct, utc(1970, 1, 1, 0, 0), utc(2040, 1, 1, 0, 0));
            assert!(n > 150_000, "{name}: {n}");
            assert!(Tz::named(name).is_some());
        }
    }
}

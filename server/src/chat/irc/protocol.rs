//! The IRC protocol without IO: reading a line (IRCv3 tags, prefix, command, parameters), writing one, splitting
//! long texts under the 512-byte line limit on UTF-8 boundaries, CTCP (`ACTION`), and cleaning what is logged of
//! mIRC formatting and control characters. The bot (`irc.rs`) does the IO; everything here is unit-tested,
//! with hostile lines too.

/// The longest line the protocol allows, CR LF included (RFC 1459 §2.3; tags have their own budget).
pub const MAX_LINE: usize = 512;

/// Longest line read from the server, tags included (IRCv3 allows 8191 bytes of tags plus 512); longer lines are
/// dropped whole rather than buffered without bound.
pub const MAX_READ: usize = 8191 + MAX_LINE;

/// One message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// IRCv3 message tags, unescaped (`account`, `time`, …), in the order sent.
    pub tags: Vec<(String, String)>,
    /// The source (`nick!user@host`, or a server name), without the leading `:`.
    pub prefix: Option<String>,
    /// The command or numeric, upper-cased.
    pub command: String,
    /// The parameters, the trailing one included.
    pub params: Vec<String>,
}

impl Message {
    /// Reads one line (without its CR LF). `None` for lines that are no message: empty, no command, or a
    /// command that is not letters or a three-digit numeric. Never panics, whatever the bytes.
    pub fn parse(line: &str) -> Option<Message> {
        let mut rest = line.trim_end_matches(['\r', '\n']);
        let mut tags = Vec::new();
        if let Some(tagged) = rest.strip_prefix('@') {
            let (raw, after) = tagged.split_once(' ')?;
            tags = raw
                .split(';')
                .filter(|tag| !tag.is_empty())
                .map(|tag| match tag.split_once('=') {
                    Some((key, value)) => (key.to_owned(), unescape_tag(value)),
                    None => (tag.to_owned(), String::new()),
                })
                .collect();
            rest = after.trim_start_matches(' ');
        }
        let mut prefix = None;
        if let Some(sourced) = rest.strip_prefix(':') {
            let (source, after) = sourced.split_once(' ')?;
            if source.is_empty() {
                return None;
            }
            prefix = Some(source.to_owned());
            rest = after.trim_start_matches(' ');
        }
        let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let is_word = !command.is_empty() && command.bytes().all(|b| b.is_ascii_alphabetic());
        let is_numeric = command.len() == 3 && command.bytes().all(|b| b.is_ascii_digit());
        if !is_word && !is_numeric {
            return None;
        }
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            if let Some(trailing) = rest.strip_prefix(':') {
                params.push(trailing.to_owned());
                break;
            }
            let (param, after) = rest.split_once(' ').unwrap_or((rest, ""));
            params.push(param.to_owned());
            rest = after;
        }
        Some(Message {
            tags,
            prefix,
            command: command.to_ascii_uppercase(),
            params,
        })
    }

    /// The value of tag `key`, if sent.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// The nick of the source (`nick` of `nick!user@host`).
    pub fn nick(&self) -> Option<&str> {
        self.prefix.as_deref().map(nick_of)
    }

    /// Parameter `i`, or `""`.
    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map_or("", String::as_str)
    }
}

/// The nick part of a source: before `!` or `@`.
pub fn nick_of(prefix: &str) -> &str {
    prefix.split(['!', '@']).next().unwrap_or(prefix)
}

/// Undoes IRCv3 tag value escaping (`\:` `;`, `\s` space, `\\`, `\r`, `\n`; a lone trailing `\` is dropped).
fn unescape_tag(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// A line to send: `command` and its parameters, the last one as trailing (`:`) when it needs to be. Parameters
/// lose CR, LF and NUL, which would end or corrupt the line; middle parameters also lose spaces and a leading `:`.
pub fn line(command: &str, params: &[&str]) -> String {
    let mut out = command.to_owned();
    let last = params.len().saturating_sub(1);
    for (i, param) in params.iter().enumerate() {
        let clean: String = param
            .chars()
            .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
            .collect();
        out.push(' ');
        if i == last {
            if clean.is_empty() || clean.contains(' ') || clean.starts_with(':') {
                out.push(':');
            }
            out.push_str(&clean);
        } else {
            out.push_str(clean.trim_start_matches(':').replace(' ', "").as_str());
        }
    }
    out
}

/// The pieces of `text` that fit in lines of at most `budget` bytes each, cut on UTF-8 boundaries, at the last
/// space when there is one in the second half of the piece. Each `\n` starts a new line; CR and NUL are dropped;
/// empty lines are skipped.
pub fn split_text(text: &str, budget: usize) -> Vec<String> {
    let budget = budget.max(8);
    let mut out = Vec::new();
    for raw in text.split('\n') {
        let clean: String = raw.chars().filter(|c| !matches!(c, '\r' | '\0')).collect();
        let mut rest = clean.trim_end();
        while !rest.is_empty() {
            if rest.len() <= budget {
                out.push(rest.to_owned());
                break;
            }
            let mut cut = budget;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            if let Some(space) = rest[..cut].rfind(' ').filter(|&space| space >= cut / 2) {
                cut = space;
            }
            out.push(rest[..cut].trim_end().to_owned());
            rest = rest[cut..].trim_start();
        }
    }
    out
}

/// The bytes a `PRIVMSG` to `target` may carry in its text, so that the line the server relays to others (with
/// our `:nick!user@host ` in front, which we cannot see exactly) stays under [`MAX_LINE`]: the host is budgeted at
/// its longest (63 bytes), the user name at ngircd's and most servers' limit (10 plus a `~`).
pub fn text_budget(nick: &str, target: &str) -> usize {
    let source = 1 + nick.len() + 1 + 11 + 1 + 63 + 1;
    let command = "PRIVMSG ".len() + target.len() + " :".len();
    MAX_LINE.saturating_sub(2 + source + command)
}

/// What a `PRIVMSG`'s text is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said<'a> {
    /// An ordinary line.
    Text(&'a str),
    /// `/me …` (CTCP `ACTION`).
    Action(&'a str),
    /// Another CTCP request (`VERSION`, `PING`, …): never logged nor answered, so a CTCP flood costs nothing.
    Ctcp,
}

/// Tells a `PRIVMSG`'s text apart: a CTCP `ACTION`, another CTCP, or plain text.
pub fn said(text: &str) -> Said<'_> {
    let Some(ctcp) = text.strip_prefix('\u{1}') else {
        return Said::Text(text);
    };
    let ctcp = ctcp.strip_suffix('\u{1}').unwrap_or(ctcp);
    match ctcp.split_once(' ') {
        Some((verb, body)) if verb.eq_ignore_ascii_case("ACTION") => Said::Action(body),
        None if ctcp.eq_ignore_ascii_case("ACTION") => Said::Action(""),
        _ => Said::Ctcp,
    }
}

/// `text` as it is logged: mIRC formatting removed (bold, italic, underline, strike-through, monospace,
/// reverse, reset, `^C` colours with their digits, `^D` hex colours with theirs), tabs as spaces, every other
/// control character dropped.
pub fn strip_formatting(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{3}' => {
                skip_colour(&mut chars, |c| c.is_ascii_digit(), 2);
            }
            '\u{4}' => {
                skip_colour(&mut chars, |c| c.is_ascii_hexdigit(), 6);
            }
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Skips a colour code's `fg[,bg]`, each at most `width` characters that `digit` accepts.
fn skip_colour(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    digit: impl Fn(char) -> bool,
    width: usize,
) {
    let take = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        let mut n = 0;
        while n < width && chars.peek().is_some_and(|&c| digit(c)) {
            chars.next();
            n += 1;
        }
        n
    };
    if take(chars) > 0 && chars.peek() == Some(&',') {
        let mut ahead = chars.clone();
        ahead.next();
        if ahead.peek().is_some_and(|&c| digit(c)) {
            chars.next();
            take(chars);
        }
    }
}

/// A channel or nick name folded for comparison under the `rfc1459` case mapping (ASCII, and `[]\~` as the
/// upper case of `{}|^`), the mapping ngircd and most networks announce.
pub fn fold(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '[' => '{',
            ']' => '}',
            '\\' => '|',
            '~' => '^',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Whether `name` is a channel name the bot may join: starts with `#` or `&`, 2–50 bytes, and holds no space,
/// comma, BEL or control character (which would split or corrupt a `JOIN`).
pub fn valid_channel(name: &str) -> bool {
    (name.starts_with('#') || name.starts_with('&'))
        && (2..=50).contains(&name.len())
        && !name.chars().any(|c| c == ' ' || c == ',' || c.is_control())
}

/// The SASL PLAIN response for `user` and `password` (RFC 4616: authzid NUL authcid NUL password, base64), cut
/// into the 400-byte `AUTHENTICATE` chunks IRCv3 requires (a final `+` when the last chunk is exactly 400).
pub fn sasl_plain(user: &str, password: &str) -> Vec<String> {
    use base64::Engine as _;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}\0{user}\0{password}"));
    let mut chunks: Vec<String> = encoded
        .as_bytes()
        .chunks(400)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect();
    if chunks.last().is_none_or(|last| last.len() == 400) {
        chunks.push("+".to_owned());
    }
    chunks
}

/// The capabilities to request of those the server offers (`CAP LS`, values after `=` ignored): `sasl` only when
/// we have SASL credentials; `account-tag` (who is logged in to services) and `server-time` (when a line was
/// said) always when offered.
pub fn wanted_caps(offered: &str, sasl: bool) -> Vec<&'static str> {
    let offered: Vec<&str> = offered
        .split(' ')
        .map(|cap| cap.split_once('=').map_or(cap, |(name, _)| name))
        .collect();
    ["sasl", "account-tag", "server-time"]
        .into_iter()
        .filter(|cap| offered.contains(cap) && (*cap != "sasl" || sasl))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tags_prefix_params_and_trailing() {
        let message = Message::parse(
            "@account=alice;time=2026-12-06T10:00:00.000Z;x=a\\sb\\:c\\\\ :alice!al@example.org PRIVMSG #inc-1 :!tl hello there\r\n",
        )
        .expect("a message");
        assert_eq!(message.tag("account"), Some("alice"));
        assert_eq!(message.tag("time"), Some("2026-12-06T10:00:00.000Z"));
        assert_eq!(message.tag("x"), Some("a b;c\\"));
        assert_eq!(message.prefix.as_deref(), Some("alice!al@example.org"));
        assert_eq!(message.nick(), Some("alice"));
        assert_eq!(message.command, "PRIVMSG");
        assert_eq!(message.params, vec!["#inc-1", "!tl hello there"]);

        let ping = Message::parse("PING :irc.example.org").expect("a ping");
        assert_eq!((ping.prefix, ping.command.as_str()), (None, "PING"));
        assert_eq!(ping.params, vec!["irc.example.org"]);

        let numeric = Message::parse(":srv 001 bot :Welcome  to  IRC").expect("a numeric");
        assert_eq!(numeric.params, vec!["bot", "Welcome  to  IRC"]);
        let spaced = Message::parse(":srv   MODE   #c   +o   bob").expect("extra spaces");
        assert_eq!(spaced.params, vec!["#c", "+o", "bob"]);
        assert_eq!(
            Message::parse(":srv CAP * LS :")
                .expect("empty trailing")
                .params,
            vec!["*", "LS", ""]
        );
    }

    #[test]
    fn hostile_lines_are_refused_or_read_safely() {
        for line in [
            "",
            " ",
            ":",
            ": PRIVMSG #c :x",
            ":only-a-prefix",
            "@tags-only",
            "@a=b :nick!u@h",
            "PRIV\u{1}MSG #c :x",
            "12 #c :x",
            "1234 x",
            ":nick!u@h 😀 #c",
        ] {
            assert_eq!(Message::parse(line), None, "{line:?}");
        }
        // Malformed prefixes still give a nick that is the prefix's text, never more.
        let odd = Message::parse(":!@ PRIVMSG #c :x").expect("an odd prefix");
        assert_eq!(odd.nick(), Some(""));
        let long = format!(":{} PRIVMSG #c :{}", "n".repeat(5000), "x".repeat(20_000));
        assert_eq!(
            Message::parse(&long).expect("long").nick().map(str::len),
            Some(5000)
        );
        // Control characters and invalid escapes in tags.
        let tagged = Message::parse("@k=\\;v=\u{7}\\ :n!u@h PRIVMSG #c :\u{0}x").expect("tagged");
        assert_eq!(tagged.tag("k"), Some(""));
        assert_eq!(tagged.tag("v"), Some("\u{7}"));
    }

    #[test]
    fn writes_lines_that_cannot_be_split_or_injected() {
        assert_eq!(line("PRIVMSG", &["#c", "hi there"]), "PRIVMSG #c :hi there");
        assert_eq!(line("JOIN", &["#c"]), "JOIN #c");
        assert_eq!(line("PRIVMSG", &["#c", ":)"]), "PRIVMSG #c ::)");
        assert_eq!(line("PRIVMSG", &["#c", ""]), "PRIVMSG #c :");
        assert_eq!(
            line("PRIVMSG", &["#c x", "a\r\nQUIT :bye\0"]),
            "PRIVMSG #cx :aQUIT :bye"
        );
    }

    #[test]
    fn splits_on_utf8_boundaries_and_spaces_under_the_budget() {
        assert_eq!(split_text("a\nb\r\n\n c ", 100), vec!["a", "b", " c"]);
        let words = "word ".repeat(100);
        for piece in split_text(&words, 50) {
            assert!(piece.len() <= 50 && !piece.ends_with(' ') && !piece.is_empty());
        }
        // Multi-byte characters are never cut: every piece is valid UTF-8 (guaranteed by String) and the pieces
        // rejoin to the original.
        let emoji = "é😀字".repeat(200);
        let pieces = split_text(&emoji, 61);
        assert!(pieces.iter().all(|piece| piece.len() <= 61));
        assert_eq!(pieces.concat(), emoji);
        // The budget leaves room for the relayed prefix.
        let budget = text_budget("commandpost", "#inc-465-checkout");
        let relayed = format!(
            ":commandpost!~{}@{} PRIVMSG #inc-465-checkout :{}\r\n",
            "u".repeat(10),
            "h".repeat(63),
            "x".repeat(budget)
        );
        assert!(relayed.len() <= MAX_LINE, "{}", relayed.len());
    }

    #[test]
    fn tells_actions_from_other_ctcp() {
        assert_eq!(said("hello"), Said::Text("hello"));
        assert_eq!(said("\u{1}ACTION waves\u{1}"), Said::Action("waves"));
        assert_eq!(said("\u{1}action waves"), Said::Action("waves"));
        assert_eq!(said("\u{1}VERSION\u{1}"), Said::Ctcp);
        assert_eq!(said("\u{1}PING 123\u{1}"), Said::Ctcp);
        assert_eq!(said("\u{1}"), Said::Ctcp);
    }

    #[test]
    fn strips_formatting_and_control_characters() {
        assert_eq!(
            strip_formatting(
                "\u{2}bold\u{2} \u{3}4,12red on blue\u{3} \u{3}99x \u{3},5y \u{1d}it\u{1f}u\u{1e}s\u{11}m\u{16}r\u{f}"
            ),
            "bold red on blue x ,5y itusmr"
        );
        assert_eq!(strip_formatting("\u{4}FF0000,00ff00hex\u{4}"), "hex");
        assert_eq!(strip_formatting("a\tb\u{7}\u{1b}[31mc\u{0}"), "a b[31mc");
        assert_eq!(strip_formatting("\u{3}12,x"), ",x");
    }

    #[test]
    fn folds_names_and_checks_channels() {
        assert_eq!(fold("#Inc-[465]\\~"), "#inc-{465}|^");
        assert!(valid_channel("#inc-465-checkout"));
        for bad in [
            "inc",
            "#",
            "#a b",
            "#a,#b",
            "#a\u{7}",
            &format!("#{}", "x".repeat(60)),
        ] {
            assert!(!valid_channel(bad), "{bad:?}");
        }
    }

    #[test]
    fn sasl_plain_and_caps() {
        // RFC 4616's example shape: authzid NUL authcid NUL password.
        assert_eq!(
            sasl_plain("tim", "tanstaaftanstaaf"),
            vec!["dGltAHRpbQB0YW5zdGFhZnRhbnN0YWFm"]
        );
        let long = sasl_plain("u", &"p".repeat(600));
        assert_eq!(long.len(), 3);
        assert_eq!(long[0].len(), 400);
        assert_eq!(
            wanted_caps(
                "multi-prefix sasl=PLAIN,EXTERNAL account-tag server-time",
                true
            ),
            vec!["sasl", "account-tag", "server-time"]
        );
        assert_eq!(wanted_caps("sasl multi-prefix", false), Vec::<&str>::new());
    }
}

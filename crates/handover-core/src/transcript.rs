//! The bot transcript, rendered for the agent and split into messages Salesforce accepts.

/// Who spoke a transcript turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Speaker {
    /// The customer.
    User,
    /// The bot.
    Bot,
}

/// One turn of the conversation between the customer and the bot before the handover.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TranscriptTurn {
    /// Who said it.
    pub speaker: Speaker,
    /// What was said.
    pub text: String,
}

impl TranscriptTurn {
    /// A turn by the customer.
    pub fn user(text: impl Into<String>) -> Self {
        Self {
            speaker: Speaker::User,
            text: text.into(),
        }
    }

    /// A turn by the bot.
    pub fn bot(text: impl Into<String>) -> Self {
        Self {
            speaker: Speaker::Bot,
            text: text.into(),
        }
    }
}

/// Renders the transcript as the text the agent reads: one `Customer: …` or `Bot: …` line per
/// turn. Empty turns are left out; line breaks inside a turn are kept.
pub fn render(turns: &[TranscriptTurn]) -> String {
    let mut out = String::new();
    for turn in turns {
        let text = turn.text.trim();
        if text.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(match turn.speaker {
            Speaker::User => "Customer: ",
            Speaker::Bot => "Bot: ",
        });
        out.push_str(text);
    }
    out
}

/// [`render`], keeping the newest turns within `max_chars` characters: when the whole is
/// longer, it starts at a line boundary with a line saying how many characters were left out.
/// The result never exceeds `max_chars` plus that line.
pub fn render_capped(turns: &[TranscriptTurn], max_chars: usize) -> String {
    let text = render(turns);
    let total = text.chars().count();
    if total <= max_chars {
        return text;
    }
    // The newest `max_chars` characters, from the first line break among them if there is one.
    let start = text
        .char_indices()
        .nth(total - max_chars)
        .map_or(text.len(), |(index, _)| index);
    let tail = &text[start..];
    let tail = match tail.find('\n') {
        Some(newline) if newline + 1 < tail.len() => &tail[newline + 1..],
        _ => tail,
    };
    let left_out = total - tail.chars().count();
    format!("[{left_out} earlier characters of the conversation left out]\n{tail}")
}

/// Splits `text` into chunks of at most `max_chars` characters (Unicode scalar values).
///
/// - The chunks concatenate back to `text` exactly.
/// - A chunk ends after the last line break that fits, if there is one in the second half of
///   the chunk; otherwise after the last whitespace there; otherwise at `max_chars`. (Looking
///   only at the second half keeps a short first line from wasting a whole message of the 22
///   a conversation may send per minute.) A chunk never ends inside a character, because the
///   cut points are character boundaries.
/// - An empty `text` gives no chunks.
///
/// `max_chars` of zero is treated as one, so the function always makes progress.
pub fn split(text: &str, max_chars: usize) -> Vec<&str> {
    let max_chars = max_chars.max(1);
    let mut chunks = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let cut = cut_point(rest, max_chars);
        let (chunk, tail) = rest.split_at(cut);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

/// The byte index at which the first chunk of `text` ends.
fn cut_point(text: &str, max_chars: usize) -> usize {
    // Byte index just past the `max_chars`-th character, or the whole text if shorter.
    let Some((limit, _)) = text.char_indices().nth(max_chars) else {
        return text.len();
    };
    let half = text
        .char_indices()
        .nth(max_chars / 2)
        .map_or(0, |(index, _)| index);
    let second_half = &text[half..limit];
    // Cutting after a separator keeps it at the end of the chunk, so nothing is lost.
    if let Some(newline) = second_half.rfind('\n') {
        return half + newline + 1;
    }
    if let Some((index, whitespace)) = second_half
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_whitespace())
    {
        return half + index + whitespace.len_utf8();
    }
    limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_line_boundaries_then_whitespace_then_hard_cuts() {
        assert_eq!(split("ab\ncd\nef", 6), vec!["ab\ncd\n", "ef"]);
        assert_eq!(split("abc def ghi", 8), vec!["abc def ", "ghi"]);
        assert_eq!(split("abcdefgh", 3), vec!["abc", "def", "gh"]);
        assert_eq!(split("", 3), Vec::<&str>::new());
        assert_eq!(split("äöü€", 2), vec!["äö", "ü€"]);
        // A line break early in the window is not worth a whole message.
        assert_eq!(split("a\nbcdefghij", 6), vec!["a\nbcde", "fghij"]);
    }

    #[test]
    fn a_long_transcript_keeps_its_newest_whole_lines() {
        let turns: Vec<TranscriptTurn> = (0..100)
            .map(|i| TranscriptTurn::user(format!("line {i:03}")))
            .collect();
        let whole = render(&turns);
        assert_eq!(render_capped(&turns, whole.chars().count()), whole);
        let capped = render_capped(&turns, 60);
        let mut lines = capped.lines();
        let marker = lines.next().expect("a marker line");
        let kept: Vec<&str> = lines.collect();
        assert!(kept.len() >= 3 && kept.len() <= 5, "{kept:?}");
        assert_eq!(kept.last(), Some(&"Customer: line 099"));
        assert!(kept.iter().all(|line| line.starts_with("Customer: line ")));
        let left_out = whole.chars().count() - kept.join("\n").chars().count();
        assert_eq!(
            marker,
            format!("[{left_out} earlier characters of the conversation left out]")
        );
        // A single line longer than the cap is cut inside.
        let one = [TranscriptTurn::bot("x".repeat(500))];
        let capped = render_capped(&one, 100);
        assert!(capped.ends_with(&"x".repeat(100)));
    }

    #[test]
    fn render_labels_turns_and_skips_empty_ones() {
        let turns = [
            TranscriptTurn::user("hi"),
            TranscriptTurn::bot("  "),
            TranscriptTurn::bot("Hello!\nHow can I help?"),
        ];
        assert_eq!(render(&turns), "Customer: hi\nBot: Hello!\nHow can I help?");
    }
}

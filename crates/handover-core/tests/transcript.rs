//! Properties of transcript splitting: the chunks re-join to the input, none is longer than
//! the limit, none is empty, none breaks a character, and line boundaries are preferred.

use handover_core::transcript::split;
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => "[a-z]{1,12}",
        2 => Just(" ".to_owned()),
        2 => Just("\n".to_owned()),
        1 => Just("é".to_owned()),
        1 => Just("€".to_owned()),
        1 => Just("😀".to_owned()),
        1 => Just("\u{200d}".to_owned()),
    ];
    proptest::collection::vec(piece, 0..800).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn chunks_rejoin_fit_and_never_break_a_character(text in text(), limit in prop_oneof![1usize..40, Just(3000usize)]) {
        let chunks = split(&text, limit);
        prop_assert_eq!(chunks.concat(), text.clone());
        let mut offset = 0;
        for chunk in &chunks {
            prop_assert!(!chunk.is_empty());
            prop_assert!(chunk.chars().count() <= limit);
            // Each cut is a character boundary of the original text.
            offset += chunk.len();
            prop_assert!(text.is_char_boundary(offset));
        }
    }

    #[test]
    fn a_chunk_that_does_not_end_a_line_had_no_line_break_to_end_at(text in text(), limit in 2usize..60) {
        let chunks = split(&text, limit);
        for chunk in chunks.iter().take(chunks.len().saturating_sub(1)) {
            if !chunk.ends_with('\n') {
                let second_half: String = chunk.chars().skip(limit / 2).collect();
                prop_assert!(!second_half.contains('\n'), "{:?} could have ended at a line break", chunk);
            }
        }
    }
}

#[test]
fn a_7500_character_transcript_of_short_lines_needs_three_messages() {
    let line = format!("{}\n", "x".repeat(99));
    let text = line.repeat(75);
    let chunks = split(&text, 3000);
    assert_eq!(chunks.len(), 3);
    assert!(chunks.iter().all(|chunk| chunk.ends_with('\n')));
}

//! Hiding Secret values in output that arrives in pieces (an interactive exec's terminal): a
//! value split across two pieces is hidden as surely as one that arrives whole.
//!
//! The rule is the same for a whole text and for its pieces: scanning from the left, where one
//! or more values start, the longest is replaced by `(hidden)`. A [`Redactor`] holds back only
//! the bytes that may still become the start of a value, so everything else passes at once.

/// What a hidden value becomes.
pub const HIDDEN: &[u8] = b"(hidden)";

/// Values shorter than this are not hidden: they would hide ordinary words.
pub const SHORTEST: usize = 4;

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    values: Vec<Vec<u8>>,
    held: Vec<u8>,
}

impl Redactor {
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Redactor {
        let mut values: Vec<Vec<u8>> =
            values.into_iter().filter(|v| v.len() >= SHORTEST).map(|v| v.as_bytes().to_vec()).collect();
        values.sort();
        values.dedup();
        Redactor { values, held: Vec::new() }
    }

    /// Whether bytes are held back, waiting to see whether they start a value.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// What of `piece` (after what was held) can be shown now.
    pub fn push(&mut self, piece: &[u8]) -> Vec<u8> {
        if self.values.is_empty() {
            return piece.to_vec();
        }
        self.held.extend_from_slice(piece);
        let (shown, used) = scan(&self.values, &self.held, false);
        self.held.drain(..used);
        shown
    }

    /// The rest, once no more comes (or when holding back longer would stall a terminal).
    pub fn flush(&mut self) -> Vec<u8> {
        let (shown, _) = scan(&self.values, &self.held, true);
        self.held.clear();
        shown
    }
}

/// `output` with every value of `values` hidden, per stream. What may start a value is held
/// back at most `hold` after the last piece: a terminal must echo what is typed.
pub fn hide_output(
    output: super::runtime::OutputChunks,
    values: &[String],
    hold: std::time::Duration,
) -> super::runtime::OutputChunks {
    use super::runtime::OutputStream;
    use futures_util::StreamExt as _;
    let redactor = Redactor::new(values.iter().map(String::as_str));
    if redactor.values.is_empty() {
        return output;
    }
    let streams = [OutputStream::Stdout, OutputStream::Stderr];
    let state = (output, [redactor.clone(), redactor], false);
    Box::pin(futures_util::stream::unfold(state, move |(mut output, mut hiders, mut ended)| async move {
        loop {
            let holding = hiders.iter().position(Redactor::holding);
            if ended {
                let index = holding?;
                let rest = hiders[index].flush();
                return Some((Ok((streams[index], rest)), (output, hiders, ended)));
            }
            let next = match holding {
                Some(_) => tokio::time::timeout(hold, output.next()).await,
                None => Ok(output.next().await),
            };
            match next {
                Err(_) => {
                    let index = holding.expect("a timeout only while holding");
                    let rest = hiders[index].flush();
                    return Some((Ok((streams[index], rest)), (output, hiders, ended)));
                }
                Ok(None) => ended = true,
                Ok(Some(Err(error))) => return Some((Err(error), (output, hiders, true))),
                Ok(Some(Ok((stream, bytes)))) => {
                    let index = usize::from(stream == OutputStream::Stderr);
                    let shown = hiders[index].push(&bytes);
                    if !shown.is_empty() {
                        return Some((Ok((stream, shown)), (output, hiders, ended)));
                    }
                }
            }
        }
    }))
}

/// `text` with every value hidden, as a [`Redactor`] shows it when given all at once.
pub fn redact(values: &[&str], text: &[u8]) -> Vec<u8> {
    let mut redactor = Redactor::new(values.iter().copied());
    let mut shown = redactor.push(text);
    shown.extend(redactor.flush());
    shown
}

/// Shows what can be decided of `text`; returns it and how many bytes of `text` it used. Unless
/// `last`, it stops where the rest could still grow into a value longer than it.
fn scan(values: &[Vec<u8>], text: &[u8], last: bool) -> (Vec<u8>, usize) {
    let mut shown = Vec::with_capacity(text.len());
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at..];
        if !last && values.iter().any(|v| v.len() > rest.len() && v.starts_with(rest)) {
            break;
        }
        match values.iter().filter(|v| rest.starts_with(v)).map(Vec::len).max() {
            Some(length) => {
                shown.extend_from_slice(HIDDEN);
                at += length;
            }
            None => {
                shown.push(rest[0]);
                at += 1;
            }
        }
    }
    (shown, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values_are_hidden_across_pieces_and_the_rest_passes_at_once() {
        let mut redactor = Redactor::new(["hunter22", "s3cr3t-token", "ab"]);
        assert_eq!(redactor.push(b"login: hun"), b"login: ");
        assert!(redactor.holding());
        assert_eq!(redactor.push(b"ter22\r\n$ "), b"(hidden)\r\n$ ");
        assert!(!redactor.holding());
        // A short value is not hidden.
        assert_eq!(redactor.push(b"ab"), b"ab");
        // What only looked like the start of a value comes out once it is plainly not one.
        assert_eq!(redactor.push(b"s3cr"), b"");
        assert_eq!(redactor.push(b"ew"), b"s3crew");
        assert_eq!(redactor.push(b"hunt"), b"");
        assert_eq!(redactor.flush(), b"hunt");
        // The longest of values that start at the same place is hidden.
        assert_eq!(redact(&["tokenx", "tokenxyz"], b"a tokenxyz b tokenx"), b"a (hidden) b (hidden)");
    }

    proptest! {
        /// However the output is cut, what is shown is the same as for the whole, and no value
        /// appears in it.
        #[test]
        fn pieces_show_what_the_whole_shows(
            text in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'c'), Just(b'\n')], 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..20),
            values in proptest::collection::vec("[abc]{4,7}", 1..4),
        ) {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            let whole = redact(&values, &text);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            cuts.sort_unstable();
            let mut redactor = Redactor::new(values.iter().copied());
            let mut shown = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([text.len()]) {
                shown.extend(redactor.push(&text[from..cut]));
                from = cut;
            }
            shown.extend(redactor.flush());
            prop_assert_eq!(&shown, &whole);
            for value in &values {
                let found = shown.windows(value.len()).any(|w| w == value.as_bytes());
                prop_assert!(!found, "{} shown in {:?}", value, String::from_utf8_lossy(&shown));
            }
        }
    }
}

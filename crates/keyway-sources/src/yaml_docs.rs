//! Splits a multi-document YAML stream into documents, remembering where each starts.
//!
//! Each document is then parsed on its own, so a parse error's line within the document
//! can be turned back into a line of the file.

/// One YAML document of a file.
pub(crate) struct Document<'a> {
    /// The document's text (without its `---` marker line).
    pub text: &'a str,
    /// 0-based line of the file at which `text` starts.
    pub first_line: usize,
}

impl Document<'_> {
    /// 1-based file line of the first line that is neither blank nor a comment.
    pub fn content_line(&self) -> usize {
        let skipped = self
            .text
            .lines()
            .take_while(|l| {
                let t = l.trim();
                t.is_empty() || t.starts_with('#')
            })
            .count();
        self.first_line + skipped + 1
    }
}

/// Whether `line` starts a new document (`---`, optionally followed by a space and content).
fn is_separator(line: &str) -> bool {
    let line = line.trim_end_matches('\r');
    line == "---" || line.starts_with("--- ") || line.starts_with("---\t") || line == "..."
}

/// Splits `text` at document markers. Empty documents are kept; the caller skips them.
pub(crate) fn split(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 0;
    let mut offset = 0;
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        if is_separator(line.trim_end_matches('\n')) {
            docs.push(Document {
                text: &text[start_byte..offset],
                first_line: start_line,
            });
            start_byte = offset + line.len();
            start_line = line_no + 1;
        }
        offset += line.len();
    }
    docs.push(Document {
        text: &text[start_byte..],
        first_line: start_line,
    });
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_numbers_lines() {
        let text = "---\na: 1\n---\n# c\nb: 2\n";
        let docs = split(text);
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].text, "");
        assert_eq!(docs[1].text, "a: 1\n");
        assert_eq!(docs[1].content_line(), 2);
        assert_eq!(docs[2].text, "# c\nb: 2\n");
        assert_eq!(docs[2].content_line(), 5);
    }

    #[test]
    fn a_dash_run_inside_a_value_is_not_a_separator() {
        let docs = split("a: |\n  ---\nb: 1\n");
        assert_eq!(docs.len(), 1);
    }
}

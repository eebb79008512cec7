//! Task metrics as pure functions of generated text and reference text: exact-match accuracy for
//! labels, entity-level precision, recall and F1 for JSON extraction, ROUGE-L for free text.
//!
//! Normalisation is deliberately light and the same everywhere: surrounding whitespace is trimmed
//! and text is lowercased (Unicode `to_lowercase`); nothing else (no punctuation stripping, no
//! stemming), so that a score means what it says.

use serde_json::Value;

/// A label normalised for comparison: trimmed and lowercased.
pub fn normalize(text: &str) -> String {
    text.trim().to_lowercase()
}

/// Whether `generated` is the label `reference` (after [`normalize`] on both).
pub fn exact_match(generated: &str, reference: &str) -> bool {
    normalize(generated) == normalize(reference)
}

/// Length of the longest common subsequence of `a` and `b` (dynamic programming, one row).
pub fn lcs_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diagonal = 0; // row[j] of the previous line, before it was overwritten
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y { diagonal + 1 } else { above.max(row[j]) };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// ROUGE-L F1 (β = 1) of `generated` against `reference`: the longest common subsequence of
/// their lowercased whitespace-separated tokens, as precision over the generated tokens and
/// recall over the reference's. Two empty texts score 1, one empty text 0.
pub fn rouge_l_f1(generated: &str, reference: &str) -> f64 {
    let (generated, reference) = (generated.to_lowercase(), reference.to_lowercase());
    let g: Vec<&str> = generated.split_whitespace().collect();
    let r: Vec<&str> = reference.split_whitespace().collect();
    if g.is_empty() || r.is_empty() {
        return if g.is_empty() && r.is_empty() { 1.0 } else { 0.0 };
    }
    let lcs = lcs_len(&g, &r) as f64;
    if lcs == 0.0 {
        return 0.0;
    }
    let (precision, recall) = (lcs / g.len() as f64, lcs / r.len() as f64);
    2.0 * precision * recall / (precision + recall)
}

/// One entity: its type (empty when the JSON gives none) and its text, both normalised.
pub type Entity = (String, String);

/// The entities in `text`, a JSON object of type → list of strings (or one string), or a JSON
/// list of `{"type", "text"}` objects or of strings. Text around the JSON (a model that adds a
/// sentence) is ignored: the span from the first `{` or `[` to the last `}` or `]` is tried when
/// the whole text does not parse. `None` when no such JSON is found.
pub fn parse_entities(text: &str) -> Option<Vec<Entity>> {
    let value = serde_json::from_str::<Value>(text.trim()).ok().or_else(|| {
        let start = text.find(['{', '['])?;
        let end = text.rfind(['}', ']'])?;
        serde_json::from_str::<Value>(text.get(start..=end)?).ok()
    })?;
    let entity = |kind: &str, text: &str| (normalize(kind), normalize(text));
    let mut out = Vec::new();
    match value {
        Value::Object(map) => {
            for (kind, texts) in map {
                match texts {
                    Value::String(t) => out.push(entity(&kind, &t)),
                    Value::Array(items) => {
                        for item in items {
                            out.push(entity(&kind, item.as_str()?));
                        }
                    }
                    _ => return None,
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::String(t) => out.push(entity("", &t)),
                    Value::Object(fields) => {
                        let text = fields.get("text")?.as_str()?;
                        let kind = fields.get("type").and_then(Value::as_str).unwrap_or("");
                        out.push(entity(kind, text));
                    }
                    _ => return None,
                }
            }
        }
        _ => return None,
    }
    Some(out)
}

/// Entity counts summed over examples (micro averaging).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntityCounts {
    /// Generated entities that match a reference entity (each reference entity matched once).
    pub true_positives: usize,
    /// Entities generated.
    pub predicted: usize,
    /// Entities in the references.
    pub reference: usize,
}

impl EntityCounts {
    /// The counts of one example: a multiset intersection on (type, text).
    pub fn of(generated: &[Entity], reference: &[Entity]) -> EntityCounts {
        let mut unmatched: Vec<&Entity> = reference.iter().collect();
        let mut true_positives = 0;
        for e in generated {
            if let Some(i) = unmatched.iter().position(|r| *r == e) {
                unmatched.swap_remove(i);
                true_positives += 1;
            }
        }
        EntityCounts { true_positives, predicted: generated.len(), reference: reference.len() }
    }

    /// Adds another example's counts.
    pub fn add(&mut self, other: EntityCounts) {
        self.true_positives += other.true_positives;
        self.predicted += other.predicted;
        self.reference += other.reference;
    }

    /// True positives over generated entities (0 when none was generated).
    pub fn precision(&self) -> f64 {
        ratio(self.true_positives, self.predicted)
    }

    /// True positives over reference entities (0 when there are none).
    pub fn recall(&self) -> f64 {
        ratio(self.true_positives, self.reference)
    }

    /// Harmonic mean of precision and recall (0 when both are 0).
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

fn ratio(n: usize, d: usize) -> f64 {
    if d == 0 {
        0.0
    } else {
        n as f64 / d as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn exact_match_trims_and_folds_case() {
        assert!(exact_match(" Positive\n", "positive"));
        assert!(!exact_match("positive.", "positive"));
        assert!(!exact_match("not positive", "positive"));
    }

    #[test]
    fn lcs_of_known_sequences() {
        assert_eq!(lcs_len(b"ABCBDAB", b"BDCABA"), 4); // CLRS 15.4: BCBA
        assert_eq!(lcs_len(b"", b"abc"), 0);
        assert_eq!(lcs_len(b"abc", b"abc"), 3);
        assert_eq!(lcs_len(b"abc", b"xyz"), 0);
    }

    #[test]
    fn rouge_l_by_hand() {
        // LCS 3; precision 3/3, recall 3/4: F1 = 2 * 0.75 / 1.75 = 6/7.
        assert!(close(rouge_l_f1("the cat sat", "the cat sat down"), 6.0 / 7.0));
        // Symmetric in this case: precision 3/4, recall 1.
        assert!(close(rouge_l_f1("the cat sat down", "the cat sat"), 6.0 / 7.0));
        // "police killed the gunman" vs "police kill the gunman": LCS police, the, gunman = 3 of 4.
        assert!(close(rouge_l_f1("police kill the gunman", "police killed the gunman"), 0.75));
        // Order matters: LCS of "a b c" and "c b a" is 1: P = R = 1/3.
        assert!(close(rouge_l_f1("a b c", "c b a"), 1.0 / 3.0));
        assert!(close(rouge_l_f1("The Cat", "the  cat"), 1.0));
        assert!(close(rouge_l_f1("", "x"), 0.0));
        assert!(close(rouge_l_f1(" ", ""), 1.0));
        assert!(close(rouge_l_f1("dog", "cat"), 0.0));
    }

    #[test]
    fn entities_from_each_json_shape() {
        let by_type = parse_entities(r#"{"person": ["Ada Lovelace"], "place": "London"}"#).unwrap();
        assert_eq!(by_type, vec![("person".into(), "ada lovelace".into()), ("place".into(), "london".into())]);
        let listed = parse_entities(r#"[{"type": "PERSON", "text": "Ada"}, {"text": "x"}]"#).unwrap();
        assert_eq!(listed, vec![("person".into(), "ada".into()), (String::new(), "x".into())]);
        assert_eq!(
            parse_entities(r#"["a", " B "]"#).unwrap(),
            vec![(String::new(), "a".into()), (String::new(), "b".into())]
        );
        assert_eq!(parse_entities("Sure! {\"p\": [\"x\"]} Hope that helps.").unwrap(), vec![("p".into(), "x".into())]);
        assert_eq!(parse_entities("{}").unwrap(), vec![]);
        for bad in ["no json here", "{\"p\": [1]}", "[[\"a\"]]", "42", "{\"p\": [\"x\""] {
            assert_eq!(parse_entities(bad), None, "{bad}");
        }
    }

    #[test]
    fn entity_counts_micro_average() {
        let e = |k: &str, t: &str| (k.to_owned(), t.to_owned());
        // Example 1: 2 generated, 1 right; 3 in the reference.
        let one = EntityCounts::of(&[e("p", "ada"), e("p", "bob")], &[e("p", "ada"), e("l", "x"), e("l", "y")]);
        assert_eq!(one, EntityCounts { true_positives: 1, predicted: 2, reference: 3 });
        // Example 2: unparsable output counts as no entities; a duplicate matches once.
        let two = EntityCounts::of(&[], &[e("p", "c")]);
        let three = EntityCounts::of(&[e("p", "d"), e("p", "d")], &[e("p", "d")]);
        let mut total = one;
        total.add(two);
        total.add(three);
        assert_eq!(total, EntityCounts { true_positives: 2, predicted: 4, reference: 5 });
        assert!(close(total.precision(), 0.5));
        assert!(close(total.recall(), 0.4));
        assert!(close(total.f1(), 2.0 * 0.5 * 0.4 / 0.9));
        assert!(close(EntityCounts::default().f1(), 0.0));
    }
}

//! "Did you mean …?" suggestions for misspelt keys, names and values.

/// The candidate closest to `word`, if it is close enough to be a plausible typo.
///
/// Uses the Damerau–Levenshtein distance (a transposition counts as one edit), accepting up
/// to a third of the word's length (at least one edit), with Jaro–Winkler as a tie-breaker
/// for longer names. Comparison ignores ASCII case.
pub fn did_you_mean<'a, I>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    let w = word.to_ascii_lowercase();
    let budget = (w.chars().count() / 3).max(1);
    let mut best: Option<(usize, f64, &str)> = None;
    for cand in candidates {
        if cand == word {
            continue;
        }
        let c = cand.to_ascii_lowercase();
        let dist = strsim::damerau_levenshtein(&w, &c);
        let jw = strsim::jaro_winkler(&w, &c);
        let plausible =
            dist <= budget || (jw >= 0.9 && w.len() >= 6) || (c.len() >= 4 && w.contains(&c));
        if !plausible {
            continue;
        }
        let better = match best {
            None => true,
            Some((bd, bjw, _)) => dist < bd || (dist == bd && jw > bjw),
        };
        if better {
            best = Some((dist, jw, cand));
        }
    }
    best.map(|(_, _, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn typos_are_matched() {
        assert_eq!(
            did_you_mean("rotue", ["route", "secrets", "env"]).as_deref(),
            Some("route")
        );
        assert_eq!(
            did_you_mean("secrest", ["route", "secrets", "env"]).as_deref(),
            Some("secrets")
        );
        assert_eq!(
            did_you_mean("GH_TOKN", ["GH_TOKEN", "NPM_TOKEN"]).as_deref(),
            Some("GH_TOKEN")
        );
        assert_eq!(
            did_you_mean("Workspace", ["workspace"]).as_deref(),
            Some("workspace")
        );
    }

    #[test]
    fn unrelated_words_are_not() {
        assert_eq!(did_you_mean("banana", ["route", "secrets", "env"]), None);
        assert_eq!(did_you_mean("x", ["env"]), None);
    }
}

//! Per-rule true positives and near-miss negatives from the generated corpus, known-secret
//! encodings, streaming boundaries, and "findings never contain the secret".

use base64::Engine as _;
use bottle_scanner::corpus::{samples, Rng};
use bottle_scanner::{Finding, Scanner};

fn scanner() -> Scanner {
    Scanner::builder().default_rules(true).build().unwrap()
}

fn assert_no_leak(findings: &[Finding], secret: &str) {
    // The secret minus its first 4 bytes must not appear anywhere in the output forms.
    let tail = &secret[secret.len().min(4)..];
    if tail.len() < 6 {
        return;
    }
    for f in findings {
        let forms = [
            format!("{f}"),
            format!("{f:?}"),
            serde_json::to_string(f).unwrap(),
        ];
        for form in forms {
            assert!(!form.contains(tail), "finding leaks the secret: {form}");
        }
    }
}

#[test]
fn every_rule_has_samples() {
    let s = scanner();
    let ids: Vec<&str> = samples().iter().map(|s| s.rule_id).collect();
    for id in s.rule_ids() {
        assert!(ids.contains(&id.as_str()), "rule {id} has no corpus sample");
    }
    assert!(s.rule_ids().len() >= 60);
}

#[test]
fn true_positives_and_near_misses() {
    let s = scanner();
    let mut failures = Vec::new();
    for sample in samples() {
        for seed in 0..8u64 {
            let mut rng = Rng::new(seed * 7919 + sample.rule_id.len() as u64);
            let pos = sample.positive(&mut rng);
            let text = format!("fn main() {{}}\n{pos}// end\n");
            let found = s.scan(text.as_bytes());
            let hit = found.iter().find(|f| f.rule_id == sample.rule_id);
            match hit {
                None => failures.push(format!(
                    "{}: missed positive (seed {seed}); got {:?}",
                    sample.rule_id,
                    found.iter().map(|f| &f.rule_id).collect::<Vec<_>>()
                )),
                Some(f) => {
                    let secret = &text[f.offset..f.offset + f.len];
                    assert!(
                        pos.contains(secret),
                        "{}: span outside sample",
                        sample.rule_id
                    );
                    assert_no_leak(&found, secret);
                }
            }
            let neg = sample.negative(&mut rng);
            let text = format!("fn main() {{}}\n{neg}// end\n");
            let found = s.scan(text.as_bytes());
            if found.iter().any(|f| f.rule_id == sample.rule_id) {
                failures.push(format!(
                    "{}: fired on near miss (seed {seed})",
                    sample.rule_id
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn disable_and_core_floor() {
    let e = Scanner::builder()
        .default_rules(true)
        .disable(&["github-pat"])
        .unwrap()
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("core floor"), "{e}");
    let e = Scanner::builder()
        .default_rules(true)
        .disable(&["no-such-rule"])
        .unwrap()
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown rule"), "{e}");
    let s = Scanner::builder()
        .default_rules(true)
        .disable(&["jwt"])
        .unwrap()
        .build()
        .unwrap();
    assert!(!s.rule_ids().contains(&"jwt".to_string()));
}

#[test]
fn user_rule_file() {
    let dir = std::env::temp_dir().join(format!("scanner-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("acme.toml");
    std::fs::write(
        &p,
        "[[rules]]\nid = \"acme-key\"\ndescription = \"Acme\"\nregex = '''\\b(acme_[a-z0-9]{20})\\b'''\nkeywords = [\"acme_\"]\n",
    )
    .unwrap();
    let s = Scanner::builder()
        .default_rules(true)
        .rules_file(&p)
        .unwrap()
        .build()
        .unwrap();
    let text = format!("x acme_{} y", "k3j5h6g7f8d9s0a1q2w3");
    let f = s.scan(text.as_bytes());
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].rule_id, "acme-key");
    // Redefining a default id is refused.
    std::fs::write(
        &p,
        "[[rules]]\nid = \"jwt\"\nregex = 'x'\nkeywords = [\"abc\"]\n",
    )
    .unwrap();
    let e = Scanner::builder()
        .default_rules(true)
        .rules_file(&p)
        .unwrap()
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("defined twice"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

fn fake_token(rng: &mut Rng) -> String {
    format!("gh{}_{}", "p", rng.chars('a', 36))
}

fn known_scanner(secret: &str) -> Scanner {
    Scanner::builder()
        .known_secret("GH_TOKEN", secret)
        .build()
        .unwrap()
}

fn encodings(secret: &str) -> Vec<(&'static str, String)> {
    let b = secret.as_bytes();
    let std = base64::engine::general_purpose::STANDARD;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut v = vec![
        ("raw", secret.to_string()),
        ("hex", data_encoding::HEXLOWER.encode(b)),
        ("hex", data_encoding::HEXUPPER.encode(b)),
        ("base32", data_encoding::BASE32.encode(b)),
        ("base32", data_encoding::BASE32.encode(b).to_lowercase()),
        (
            "percent",
            b.iter().map(|c| format!("%{c:02X}")).collect::<String>(),
        ),
        (
            "percent",
            b.iter()
                .enumerate()
                .map(|(i, &c)| {
                    if i % 3 == 0 {
                        format!("%{c:02x}")
                    } else {
                        (c as char).to_string()
                    }
                })
                .collect(),
        ),
        (
            "json",
            b.iter()
                .map(|c| format!("\\u{:04x}", c))
                .collect::<String>(),
        ),
        ("json", secret.replace('_', "\\u005f")),
        (
            "separators",
            secret.chars().map(|c| format!("{c}-")).collect(),
        ),
        (
            "separators",
            secret.chars().map(|c| format!("{c} ")).collect(),
        ),
        (
            "separators",
            secret
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).to_string())
                .collect::<Vec<_>>()
                .join("."),
        ),
        (
            "separators",
            secret
                .as_bytes()
                .chunks(5)
                .map(|c| String::from_utf8_lossy(c).to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    ];
    // base64 at every alignment, standard and URL-safe, padded and not.
    for k in 0..3 {
        let mut data = b"xyz"[..k].to_vec();
        data.extend_from_slice(b);
        data.extend_from_slice(&b"!?"[..k.min(2)]);
        v.push(("base64", std.encode(&data)));
        v.push(("base64url", url.encode(&data)));
    }
    v
}

#[test]
fn known_secret_in_every_encoding() {
    let mut rng = Rng::new(42);
    for round in 0..20 {
        let secret = if round % 2 == 0 {
            fake_token(&mut rng)
        } else {
            // arbitrary bytes-ish printable secret with base64-hostile characters
            format!("{}+/{}~?", rng.chars('b', 20), rng.chars('w', 20))
        };
        let s = known_scanner(&secret);
        for (label, enc) in encodings(&secret) {
            let text = format!("prefix text {{\"data\": \"{enc}\"}} suffix\n");
            let found = s.scan(text.as_bytes());
            assert!(
                found
                    .iter()
                    .any(|f| f.known_secret.as_deref() == Some("GH_TOKEN")),
                "round {round}: {label} encoding not found"
            );
            for f in &found {
                assert_eq!(f.preview, "GH_TOKEN");
                assert!(f.encoding.is_some());
            }
            assert_no_leak(&found, &secret);
        }
    }
}

#[test]
fn known_secret_encoding_labels_and_offsets() {
    let mut rng = Rng::new(7);
    let secret = fake_token(&mut rng);
    let s = known_scanner(&secret);
    let hex = data_encoding::HEXLOWER.encode(secret.as_bytes());
    let text = format!("aaaa {hex} bbbb");
    let f = s.scan(text.as_bytes());
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].encoding.as_deref(), Some("hex"));
    assert_eq!(f[0].offset, 5);
    assert_eq!(f[0].len, hex.len());
    // Unrelated random text does not match.
    let other = fake_token(&mut rng);
    assert!(s.scan(other.as_bytes()).is_empty());
}

#[test]
fn known_secret_wins_over_rule() {
    let mut rng = Rng::new(9);
    let secret = fake_token(&mut rng);
    let s = Scanner::builder()
        .default_rules(true)
        .known_secret("GH_TOKEN", &secret)
        .build()
        .unwrap();
    let f = s.scan(format!("token={secret}\n").as_bytes());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].known_secret.as_deref(), Some("GH_TOKEN"));
}

fn stream_all(s: &Scanner, data: &[u8], splits: &[usize]) -> Vec<Finding> {
    let mut st = s.stream();
    let mut out = Vec::new();
    let mut prev = 0;
    for &at in splits {
        out.extend(st.feed(&data[prev..at]));
        prev = at;
    }
    out.extend(st.feed(&data[prev..]));
    out.extend(st.finish());
    out
}

#[test]
fn streaming_every_split_point() {
    let mut rng = Rng::new(5);
    let secret = fake_token(&mut rng);
    let known = fake_token(&mut rng);
    let s = Scanner::builder()
        .default_rules(true)
        .known_secret("K", &known)
        .build()
        .unwrap();
    let filler = "let x = compute(y) + 1; // comment\n".repeat(300);
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("a{known}"));
    let text = format!("{filler}token: {secret}\n{filler}data={b64}\n{filler}");
    let whole = s.scan(text.as_bytes());
    assert_eq!(whole.len(), 2, "{whole:?}");
    let positions: Vec<usize> = whole.iter().map(|f| f.offset).collect();
    for f in &whole {
        for split in f.offset.saturating_sub(3)..=f.offset + f.len + 3 {
            let got = stream_all(&s, text.as_bytes(), &[split]);
            let got_pos: Vec<usize> = got.iter().map(|f| f.offset).collect();
            assert_eq!(got_pos, positions, "split at {split}");
        }
    }
    // Tiny chunks.
    let mut splits = Vec::new();
    let mut at = 0;
    while at + 37 < text.len() {
        at += 37;
        splits.push(at);
    }
    let got = stream_all(&s, text.as_bytes(), &splits);
    assert_eq!(got.iter().map(|f| f.offset).collect::<Vec<_>>(), positions);
}

#[test]
fn finding_display_never_has_secret() {
    let mut rng = Rng::new(11);
    let secret = fake_token(&mut rng);
    let s = scanner();
    let f = s.scan(format!("x {secret} y").as_bytes());
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].preview, format!("ghp_…({})", secret.len()));
    assert_no_leak(&f, &secret);
}

/// The generic assignment rule on `.env`, shell, YAML and Markdown forms, and none of the
/// placeholders or identifiers it must leave alone.
#[test]
fn generic_assignments_and_placeholders() {
    let s = scanner();
    let mut rng = Rng::new(77);
    let generic = |f: &Finding| f.rule_id.starts_with("generic-");
    for _ in 0..16 {
        let v = format!("{}7{}", rng.chars('a', 9), rng.chars('a', 10));
        let hits = [
            format!("API_SECRET={v}\n"),
            format!("export API_SECRET=\"{v}\"\n"),
            format!("db_password: {v}\n"),
            format!("auth_token = '{v}'\n"),
            format!("| `STRIPE_CREDENTIAL` | `{v}` |\n"),
            format!("- **github_token**: {v}\n"),
            format!("private_key={v}\n"),
            format!("set PASSWD={v}\n"),
        ];
        for t in hits {
            let f = s.scan(t.as_bytes());
            let g: Vec<&Finding> = f.iter().filter(|f| generic(f)).collect();
            assert_eq!(g.len(), 1, "{t}: {f:?}");
            assert_eq!(&t[g[0].offset..g[0].offset + g[0].len], v, "{t}");
        }
    }
    let misses = [
        "API_SECRET=xxxxxxxxxxxxxxxxxxxx\n",
        "API_SECRET=changeme1234567890x\n",
        "export API_SECRET=\"${API_SECRET}\"\n",
        "api_token: <your-token-goes-here>\n",
        "password: example-pass-9876543\n",
        "token = tokenize.generate_tokens\n",
        "auth: AuthenticationProvider\n",
        "secret_key = settings.SECRET_KEY_V2\n",
        "PASSWORD_FIELD = PASSWORD_FIELD_NAME_2\n",
        "auth_url: https://login.example.org/oauth2/v2.0/token\n",
        "token_file: /var/run/secrets/kubernetes.io/token\n",
        "auth_host: auth2.internal.corp.net\n",
        "pwd = os.getcwd(1234567890123456)\n",
        "token_id = 123e4567-e89b-12d3-a456-426614174000\n",
        " * @NL80211_ATTR_AUTH_TYPE: AuthenticationType, see\n",
    ];
    for t in misses {
        let f = s.scan(t.as_bytes());
        assert!(!f.iter().any(generic), "{t}: {f:?}");
    }
}

/// Twilio API key SIDs need no `twilio` nearby; account SIDs need auth-token context; a PEM key
/// whose newlines are escaped twice (`\\n`, a JSON string inside a JSON string) is found.
#[test]
fn twilio_and_doubly_escaped_pem() {
    let s = scanner();
    let mut rng = Rng::new(5);
    for _ in 0..8 {
        let sk = format!("SK{}", rng.chars('h', 32));
        let f = s.scan(format!("{{\"sid\": \"{sk}\"}}\n").as_bytes());
        assert!(f.iter().any(|f| f.rule_id == "twilio-api-key"), "{sk}");
        let f = s.scan(format!("x = MASK{}\n", rng.chars('h', 32)).as_bytes());
        assert!(!f.iter().any(|f| f.rule_id == "twilio-api-key"));
        let ac = format!("AC{}", rng.chars('h', 32));
        for with in [
            format!("TWILIO_AUTH_TOKEN={}\nsid={ac}\n", rng.chars('h', 32)),
            format!("{{\"accountSid\": \"{ac}\"}}\n"),
            format!("client = Client(\"{ac}\", auth_token)\n"),
        ] {
            assert!(
                s.scan(with.as_bytes())
                    .iter()
                    .any(|f| f.rule_id == "twilio-account-sid"),
                "{with}"
            );
        }
        assert!(!s
            .scan(format!("sid={ac}\n").as_bytes())
            .iter()
            .any(|f| f.rule_id == "twilio-account-sid"));
        let pem = format!(
            "{{\"cfg\": \"{{\\\"key\\\": \\\"-----BEGIN RSA PRIVATE KEY-----\\\\n{}\\\\n{}\\\\n-----END RSA PRIVATE KEY-----\\\\n\\\"}}\"}}",
            rng.chars('b', 64),
            rng.chars('b', 64)
        );
        assert!(pem.contains("\\\\n"));
        assert!(
            s.scan(pem.as_bytes())
                .iter()
                .any(|f| f.rule_id == "private-key-rsa"),
            "{pem}"
        );
    }
}

/// `assignment = true` (regex only around hits in a `NAME <op> VALUE` shape, on a window from
/// just before the name to the end of the value's line) finds what the same rule finds with
/// the usual wide windows, on random assignment-like text. (Names whose keyword is `auth` or
/// `pwd` without one of the rule's keyword shapes, e.g. `authorization`, are left out: the
/// wide windows find those only when another keyword hit's window happens to cover them.)
#[test]
fn assignment_windows_same_as_wide_windows() {
    // The same rules loaded as a user file (`core` is reserved for the built-in set), with
    // and without `assignment = true`.
    let toml = bottle_scanner::rules::DEFAULT_RULES_TOML.replace("\ncore = true\n", "\n");
    let wide_toml = toml.replace("\nassignment = true\n", "\n");
    assert_ne!(wide_toml, toml);
    let build = |t: &str| {
        Scanner::builder()
            .rules_toml("rules.toml", t)
            .unwrap()
            .build()
            .unwrap()
    };
    let (narrow, wide) = (build(&toml), build(&wide_toml));
    let mut rng = Rng::new(2027);
    let pick = |rng: &mut Rng, xs: &[&'static str]| xs[rng.below(xs.len())];
    let names = [
        "API_SECRET",
        "db_password",
        "auth_token",
        "token",
        "my.secret-key",
        "x",
        "github-credential",
        "PRIVATE_KEY",
        "apikey",
        "tokenizer",
        "passwd",
        "x_auth",
        "pwd_hash",
    ];
    let lead = [
        "", "export ", "set ", "- **", "| `", "\"", "'", " ", "\n", "(", "a", "*`",
    ];
    let quote = ["", "\"", "`", "**", "'\"", "\"\"\"", "*"];
    let space = ["", " ", "  ", "\t", "\n", " \n "];
    let op = [
        "=", ":", ":=", "=>", "|", "==", "= ", ": ", "-", " ", "=\"", ":'",
    ];
    let tail = [
        "\n", " ", ";", ",", ")", "|", "\"", "", "`", "'", " |", "\r\n", "(", "\t\n",
    ];
    let mut compared = 0;
    for _ in 0..3000 {
        let mut t = String::new();
        for _ in 0..1 + rng.below(6) {
            t.push_str(pick(&mut rng, &lead));
            t.push_str(pick(&mut rng, &names));
            t.push_str(pick(&mut rng, &quote));
            t.push_str(pick(&mut rng, &space));
            t.push_str(pick(&mut rng, &op));
            t.push_str(pick(&mut rng, &space));
            let n = 10 + rng.below(30);
            let mut v = rng.chars('a', n);
            if rng.below(3) == 0 {
                v.insert(
                    rng.below(v.len()),
                    pick(&mut rng, &["=", "/", "-", ".", "'", " "])
                        .chars()
                        .next()
                        .unwrap(),
                );
            }
            t.push_str(&v);
            t.push_str(pick(&mut rng, &tail));
        }
        let gen = |s: &Scanner| -> Vec<(usize, usize)> {
            s.scan(t.as_bytes())
                .into_iter()
                .filter(|f| f.rule_id == "generic-secret-assignment")
                .map(|f| (f.offset, f.len))
                .collect()
        };
        let (a, b) = (gen(&narrow), gen(&wide));
        compared += b.len();
        assert_eq!(a, b, "{t:?}");
    }
    assert!(compared > 500, "only {compared} generic findings compared");
}

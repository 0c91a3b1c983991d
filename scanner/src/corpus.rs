//! A generator of *fake* credentials with the right shapes, for tests and benchmarks.
//!
//! Every sample is built at run time from a template and pseudo-random bytes (a seeded
//! SplitMix64), so no realistic secret is ever committed to the repository and none of the
//! generated values is a live key. Templates use `<cN>` placeholders: `N` random characters of
//! class `c`:
//!
//! | class | characters |
//! |---|---|
//! | `a` | `A-Za-z0-9` |
//! | `w` | `A-Za-z0-9_-` |
//! | `b` | `A-Za-z0-9+/` |
//! | `h` / `H` | hex lower / upper |
//! | `d` | digits |
//! | `u` | `A-Z2-7` |
//! | `U` | `A-Z0-9` |
//! | `l` | `a-z` |
//! | `g` | bech32 upper (age keys) |

/// A small deterministic PRNG (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Creates a generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random index below `n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `n` random characters of a template class (see the module docs).
    pub fn chars(&mut self, class: char, n: usize) -> String {
        let set: &[u8] = match class {
            'a' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            'w' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
            'b' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            'h' => b"0123456789abcdef",
            'H' => b"0123456789ABCDEF",
            'd' => b"0123456789",
            'u' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
            'U' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
            'l' => b"abcdefghijklmnopqrstuvwxyz",
            'g' => b"QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L",
            _ => b"x",
        };
        let mut s = String::with_capacity(n);
        for i in 0..n {
            let mut c = set[self.below(set.len())];
            // Keep `w` strings word-bounded: never end on '-'.
            if class == 'w' && i + 1 == n && c == b'-' {
                c = b'Z';
            }
            s.push(c as char);
        }
        s
    }

    /// Random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Expands a template: `<cN>` placeholders, and `<P:x|y|z>` picks one alternative.
pub fn expand(template: &str, rng: &mut Rng) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let ph = &after[..close];
        if let Some(alts) = ph.strip_prefix("P:") {
            let alts: Vec<&str> = alts.split('|').collect();
            out.push_str(alts[rng.below(alts.len())]);
        } else {
            let class = ph.chars().next().unwrap_or('a');
            let n: usize = ph[class.len_utf8()..].parse().unwrap_or(0);
            out.push_str(&rng.chars(class, n));
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Shortens the last `<cN>` placeholder of a template by `by` characters (a near miss).
fn shorten_last(template: &str, by: usize) -> String {
    let Some(open) = template.rfind('<') else {
        return template.to_string();
    };
    let close = open + template[open..].find('>').unwrap_or(0);
    let ph = &template[open + 1..close];
    let class = ph.chars().next().unwrap_or('a');
    let n: usize = ph[1..].parse().unwrap_or(0);
    format!(
        "{}<{}{}>{}",
        &template[..open],
        class,
        n.saturating_sub(by),
        &template[close + 1..]
    )
}

/// One rule's samples: a template of a true positive and templates of near misses.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The rule id that must fire on the positive.
    pub rule_id: &'static str,
    /// Template of a true positive (a whole line).
    pub positive: &'static str,
    /// Template of a near miss that the rule must NOT report; `None` = the positive with its
    /// last placeholder shortened by 4.
    pub negative: Option<&'static str>,
}

impl Sample {
    /// A true positive line.
    pub fn positive(&self, rng: &mut Rng) -> String {
        expand(self.positive, rng)
    }

    /// A near-miss line.
    pub fn negative(&self, rng: &mut Rng) -> String {
        match self.negative {
            Some(t) => expand(t, rng),
            None => expand(&shorten_last(self.positive, 4), rng),
        }
    }
}

macro_rules! s {
    ($id:literal, $pos:expr) => {
        Sample {
            rule_id: $id,
            positive: $pos,
            negative: None,
        }
    };
    ($id:literal, $pos:expr, $neg:expr) => {
        Sample {
            rule_id: $id,
            positive: $pos,
            negative: Some($neg),
        }
    };
}

/// Samples for every rule of the default ruleset.
pub fn samples() -> Vec<Sample> {
    vec![
        s!("aws-access-key-id", "aws_access_key_id = <P:AKIA|ASIA|ABIA|ACCA|A3TX><u16>\n"),
        s!("aws-secret-access-key", "aws_secret_access_key = <b40>\n"),
        s!("aws-bedrock-api-key", "AWS_BEARER_TOKEN_BEDROCK=ABSK<b120>\n", "key ABSK<b100>\n"),
        s!("amazon-mws-auth-token", "mws: amzn.mws.<h8>-<h4>-<h4>-<h4>-<h12>\n"),
        s!("github-pat", "token: ghp_<a36>\n"),
        s!("github-oauth-token", "token: gho_<a36>\n"),
        s!("github-user-to-server-token", "token: ghu_<a36>\n"),
        s!("github-app-token", "token: ghs_<a36>\n"),
        s!("github-refresh-token", "token: ghr_<a36>\n"),
        s!("github-fine-grained-pat", "token: github_pat_<a22>_<a59>\n", "token: github_pat_<a22>_<a50>\n"),
        s!("gitlab-pat", "token: glpat-<w20>\n"),
        s!("gitlab-pipeline-trigger-token", "token: glptt-<h40>\n"),
        s!("gitlab-runner-token", "token: glrt-<w20>\n"),
        s!("gitlab-deploy-token", "token: gldt-<w20>\n"),
        s!("bitbucket-api-token", "pw ATBB<a32>\n", "pw ATBB<a20>\n"),
        s!("private-key-rsa", "-----BEGIN RSA PRIVATE KEY-----\n<b64>\n<b64>\n-----END RSA PRIVATE KEY-----\n", "-----BEGIN RSA PRIVATE KEY-----\n<b30>\n...\n"),
        s!("private-key-ec", "-----BEGIN EC PRIVATE KEY-----\n<b64>\n<b64>\n-----END EC PRIVATE KEY-----\n", "-----BEGIN EC PRIVATE KEY-----\n<b30>\n...\n"),
        s!("private-key-dsa", "-----BEGIN DSA PRIVATE KEY-----\n<b64>\n<b64>\n-----END DSA PRIVATE KEY-----\n", "-----BEGIN DSA PRIVATE KEY-----\n<b30>\n...\n"),
        s!("private-key-openssh", "-----BEGIN OPENSSH PRIVATE KEY-----\n<b64>\n<b64>\n-----END OPENSSH PRIVATE KEY-----\n", "-----BEGIN OPENSSH PRIVATE KEY-----\n<b30>\n...\n"),
        s!("private-key-pkcs8", "{\"k\": \"-----BEGIN PRIVATE KEY-----\\n<b64>\\n<b64>\\n-----END PRIVATE KEY-----\\n\"}\n", "-----BEGIN PRIVATE KEY-----\n<b30>\n...\n"),
        s!("private-key-encrypted", "-----BEGIN ENCRYPTED PRIVATE KEY-----\n<b64>\n<b64>\n", "-----BEGIN ENCRYPTED PRIVATE KEY-----\n<b30>\n...\n"),
        s!("private-key-pgp", "-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\n<b64>\n<b64>\n", "-----BEGIN PGP PRIVATE KEY BLOCK-----\n<b30>\n...\n"),
        s!("private-key-other", "-----BEGIN ED25519 PRIVATE KEY-----\n<b64>\n<b64>\n", "-----BEGIN ED25519 PRIVATE KEY-----\n<b30>\n...\n"),
        s!("putty-private-key", "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: <l8>\nPublic-Lines: 2\n<b64>\n", "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n"),
        s!("age-secret-key", "AGE-SECRET-KEY-1<g58>\n"),
        s!("gcp-api-key", "key=AIza<w35>\n"),
        s!("gcp-service-account", "{\"type\": \"service_account\", \"project_id\": \"p<l6>\", \"private_key_id\": \"<h40>\", \"private_key\": \"-----BEGIN PRIVATE KEY-----\\n<b64>\\n\"}\n", "{\"type\": \"service_account\", \"project_id\": \"p<l6>\"}\n"),
        s!("google-oauth-client-secret", "secret GOCSPX-<w28>\n"),
        s!("google-oauth-access-token", "tok ya29.<w40>\n", "tok ya29.<w20>\n"),
        s!("google-oauth-refresh-token", "refresh=1//0<w60>\n", "refresh=1//0<w30>\n"),
        s!("azure-storage-account-key", "DefaultEndpointsProtocol=https;AccountName=acct<l6>;AccountKey=<b86>==;EndpointSuffix=core.windows.net\n", "AccountKey=<b80>==\n"),
        s!("azure-storage-connection-string", "BlobEndpoint=https://a.blob.core.windows.net/;SharedAccessSignature=sv=2022-11-02&ss=b&srt=sco&sp=rl&sig=<a44>%3D\n", "SharedAccessSignature=sv=2022-11-02&sig=<a20>\n"),
        s!("azure-sas-token", "https://a.blob.core.windows.net/c/f?sv=2022-11-02&ss=b&sp=r&sig=<a44>%3D\n", "https://a.blob.core.windows.net/c/f?sv=2022-11-02&ss=b&sp=r&sig=<a30>\n"),
        s!("azure-ad-client-secret", "client_secret: <a3><d1>Q~<w34>\n", "client_secret: <a3><d1>Q~<w25>\n"),
        s!("azure-eventhub-servicebus-key", "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey=<b43>=\n", "SharedAccessKey=<b38>=\n"),
        s!("alibaba-access-key-id", "id LTAI<a20>\n"),
        s!("digitalocean-pat", "t dop_v1_<h64>\n"),
        s!("digitalocean-oauth-token", "t doo_v1_<h64>\n"),
        s!("digitalocean-refresh-token", "t dor_v1_<h64>\n"),
        s!("anthropic-api-key", "x-api-key: sk-ant-api03-<w93>AA\n", "x-api-key: sk-ant-api03-<w60>\n"),
        s!("anthropic-oauth-token", "t sk-ant-oat01-<w93>AA\n", "t sk-ant-oat01-<w60>\n"),
        s!("anthropic-oauth-refresh-token", "t sk-ant-ort01-<w93>AA\n", "t sk-ant-ort01-<w60>\n"),
        s!("anthropic-admin-key", "t sk-ant-admin01-<w93>AA\n", "t sk-ant-admin01-<w60>\n"),
        s!("openai-project-key", "Authorization: sk-proj-<w48>\n", "sk-proj-<w30>\n"),
        s!("openai-service-account-key", "k sk-svcacct-<w48>\n", "k sk-svcacct-<w30>\n"),
        s!("openai-admin-key", "k sk-admin-<w48>\n", "k sk-admin-<w30>\n"),
        s!("openai-legacy-key", "k sk-<a20>T3BlbkFJ<a20>\n", "k sk-<a10>T3BlbkFJ<a20>\n"),
        s!("openrouter-api-key", "k sk-or-v1-<h64>\n"),
        s!("huggingface-token", "k hf_<a34>\n"),
        s!("huggingface-org-token", "k api_org_<a34>\n"),
        s!("groq-api-key", "k gsk_<a52>\n"),
        s!("xai-api-key", "k xai-<a80>\n"),
        s!("replicate-api-token", "k r8_<a37>\n"),
        s!("perplexity-api-key", "k pplx-<a48>\n"),
        s!("pinecone-api-key", "k pcsk_<a60>\n", "k pcsk_<a50>\n"),
        s!("langsmith-api-key", "k lsv2_pt_<h32>_<h10>\n"),
        s!("slack-bot-token", "k xoxb-<d12>-<d12>-<a24>\n", "k xoxb-<d12>-<d12>-<a10>\n"),
        s!("slack-user-token", "k xoxp-<d12>-<d12>-<d12>-<a32>\n", "k xoxp-<d12>-<d12>-<d12>-<a20>\n"),
        s!("slack-app-token", "k xapp-1-A<U10>-<d13>-<h64>\n", "k xapp-1-A<U10>\n"),
        s!("slack-config-token", "k xoxe.xoxp-1-<U164>\n", "k xoxe.xoxp-1-<U100>\n"),
        s!("slack-legacy-token", "k xoxs-<d10>-<d10>-<d10>-<h32>\n", "k xoxs-<d10>-<d10>-<h32>\n"),
        s!("slack-webhook-url", "https://hooks.slack.com/services/T<U8>/B<U8>/<a24>\n", "https://hooks.slack.com/services/T<U8>/B<U8>/<a10>\n"),
        s!("discord-webhook-url", "https://discord.com/api/webhooks/<d18>/<w68>\n", "https://discord.com/api/webhooks/<d18>/<w40>\n"),
        s!("discord-bot-token", "discord token: M<a23>.<a6>.<a27>\n", "token: M<a23>.<a6>.<a27>\n"),
        s!("telegram-bot-token", "TELEGRAM_BOT=<d9>:AA<a33>\n", "TELEGRAM_BOT=<d9>:AA<a28>\n"),
        s!("teams-webhook-url", "https://x<l5>.webhook.office.com/webhookb2/<h8>-<h4>-<h4>-<h4>-<h12>@<h8>-<h4>-<h4>-<h4>-<h12>/IncomingWebhook/<h32>/<h8>-<h4>-<h4>-<h4>-<h12>\n"),
        s!("stripe-secret-key", "k <P:sk|rk>_<P:live|test>_<a24>\n", "k sk_live_<a16>\n"),
        s!("stripe-webhook-secret", "k whsec_<b32>\n", "k whsec_<b24>\n"),
        s!("twilio-api-key", "sid: SK<h32>\n", "sid: SK<h30>\n"),
        s!("twilio-account-sid", "account_sid = \"AC<h32>\"\nauth_token = \"<h32>\"\n", "sid = \"AC<h32>\"\n"),
        s!("twilio-auth-token", "TWILIO_AUTH_TOKEN=<h32>\n", "TWILIO_AUTH_TOKEN=<h28>\n"),
        s!("sendgrid-api-key", "k SG.<a22>.<a43>\n", "k SG.<a22>.<a40>\n"),
        s!("mailgun-api-key", "mailgun_api_key = key-<h32>\n", "mailgun_api_key = key-<h28>\n"),
        s!("mailchimp-api-key", "mailchimp key <h32>-us<d1>\n", "mailchimp key <h28>-us6\n"),
        s!("shopify-access-token", "k shpat_<h32>\n"),
        s!("shopify-shared-secret", "k shpss_<h32>\n"),
        s!("shopify-custom-app-token", "k shpca_<h32>\n"),
        s!("shopify-private-app-token", "k shppa_<h32>\n"),
        s!("square-access-token", "k <P:sq0atp|sq0csp>-<a22>\n", "k sq0atp-<a16>\n"),
        s!("atlassian-api-token", "k ATATT3<w186>\n", "k ATATT3<w150>\n"),
        s!("linear-api-key", "k lin_api_<a40>\n"),
        s!("notion-api-token", "k ntn_<d11><a32>\n", "k ntn_<d11><a28>\n"),
        s!("sentry-org-token", "k sntrys_<b80>\n", "k sntrys_<b40>\n"),
        s!("sentry-user-token", "k sntryu_<h64>\n"),
        s!("new-relic-api-key", "k NRAK-<U27>\n", "k NRAK-<U20>\n"),
        s!("postman-api-key", "k PMAK-<h24>-<h34>\n"),
        s!("grafana-service-account-token", "k glsa_<a32>_<h8>\n"),
        s!("grafana-cloud-token", "k glc_<b40>\n", "k glc_<b20>\n"),
        s!("dynatrace-api-token", "k dt0c01.<U24>.<U64>\n"),
        s!("heroku-api-key", "k HRKU-<a60>\n", "k HRKU-<a50>\n"),
        s!("facebook-access-token", "k EAACEdEose0cBA<a30>\n", "k EAACEdEose0cBA<a10>\n"),
        s!("mapbox-secret-token", "k sk.eyJ<w60>.<w30>\n", "k sk.eyJ<w60>.<w10>\n"),
        s!("vault-service-token", "k hvs.<a95>\n", "k hvs.<a80>\n"),
        s!("vault-batch-token", "k hvb.<a150>\n", "k hvb.<a120>\n"),
        s!("terraform-cloud-token", "k <a14>.atlasv1.<w65>\n", "k <a14>.atlasv1.<w40>\n"),
        s!("doppler-token", "k dp.<P:pt|st|ct|sa|scim|audit>.<a43>\n", "k dp.pt.<a30>\n"),
        s!("databricks-token", "k dapi<h32>\n"),
        s!("pulumi-access-token", "k pul-<h40>\n"),
        s!("planetscale-token", "k pscale_tkn_<w40>\n", "k pscale_tkn_<w20>\n"),
        s!("supabase-secret-key", "k sb_secret_<a40>\n", "k sb_secret_<a20>\n"),
        s!("artifactory-api-key", "k AKCp<a69>\n"),
        s!("buildkite-token", "k bkua_<h40>\n"),
        s!("circleci-pat", "k CCIPAT_<a22>_<h40>\n"),
        s!("npm-access-token", "//registry.npmjs.org/:_authToken=npm_<a36>\n"),
        s!("pypi-upload-token", "password = pypi-AgEIcHlwaS5vcmc<w70>\n", "password = pypi-AgEIcHlwaS5vcmc<w30>\n"),
        s!("rubygems-api-key", "k rubygems_<h48>\n"),
        s!("crates-io-token", "token = cio<a32>\n"),
        s!("dockerhub-pat", "k dckr_pat_<w27>\n", "k dckr_pat_<w20>\n"),
        s!("jwt", "t eyJ<w30>.eyJ<w60>.<w43>\n", "t eyJ<w30>.eyJ<w60>\n"),
        s!("database-url-postgres", "DATABASE_URL=postgres://app<l3>:<a16>@db.internal:5432/app\n", "DATABASE_URL=postgres://app:password@db.internal:5432/app\n"),
        s!("database-url-mysql", "url: mysql://app<l3>:<a16>@db.internal/app\n", "url: mysql://app:mysql@db.internal/app\n"),
        s!("database-url-mongodb", "url: mongodb+srv://app<l3>:<a16>@cluster0.example.net/app\n", "url: mongodb+srv://app:password@cluster0/app\n"),
        s!("database-url-redis", "url: redis://:<a16>@cache.internal:6379/0\n", "url: redis://:redis@cache.internal:6379/0\n"),
        s!("database-url-amqp", "url: amqps://app<l3>:<a16>@mq.internal/vhost\n", "url: amqp://guest:guest@localhost/\n"),
        s!("generic-env-secret", "export SERVICE_API_KEY=<a32>\n", "export SERVICE_API_KEY=changeme_please_now\n"),
        s!("generic-quoted-secret", "{\"client_secret\": \"<a32>\"}\n", "{\"client_secret\": \"aaaaaaaaaaaaaaaaaaaaaaaa\"}\n"),
        s!("generic-secret-assignment", "<P:api_secret|db_password|authToken|github-credential|PRIVATE_KEY><P:=|: | = |:=><a7>9<a12>\n", "api_secret = tokenize.generate_tokens\n"),
        s!("nvidia-api-key", "k nvapi-<w64>\n", "k nvapi-<w40>\n"),
        s!("sendinblue-api-token", "k xkeysib-<h64>-<a16>\n", "k xkeysib-<h64>-<a10>\n"),
        s!("1password-service-account-token", "k ops_eyJ<b260>\n", "k ops_eyJ<b100>\n"),
        s!("adobe-client-secret", "k p8e-<a32>\n", "k p8e-<a20>\n"),
        s!("clojars-api-token", "k CLOJARS_<h60>\n", "k CLOJARS_<h40>\n"),
        s!("easypost-api-token", "k EZ<P:A|T>K<a54>\n", "k EZAK<a40>\n"),
        s!("shippo-api-token", "k shippo_<P:live|test>_<h40>\n", "k shippo_live_<h30>\n"),
        s!("flyio-access-token", "k fo1_<w43>\n", "k fo1_<w30>\n"),
        s!("prefect-api-token", "k pnu_<a36>\n", "k pnu_<a30>\n"),
        s!("readme-api-token", "k rdme_<h70>\n", "k rdme_<h50>\n"),
        s!("infracost-api-token", "k ico-<a32>\n", "k ico-<a20>\n"),
        s!("scalingo-api-token", "k tk-us-<w48>\n", "k tk-us-<w30>\n"),
        s!("openshift-user-token", "k sha256~<w43>\n", "k sha256~<w30>\n"),
        s!("duffel-api-token", "k duffel_<P:test|live>_<w43>\n", "k duffel_test_<w30>\n"),
        s!("flutterwave-secret-key", "k FLWSECK_TEST-<h32>-X\n", "k FLWSECK_TEST-<h30>-X\n"),
        s!("sourcegraph-access-token", "k sgp_<h16>_<h40>\n", "k sgp_<h30>\n"),
        s!("frameio-api-token", "k fio-u-<w64>\n", "k fio-u-<w40>\n"),
        s!("typeform-api-token", "k tfp_<w59>\n", "k tfp_<w40>\n"),
        s!("cloudflare-origin-ca-key", "k v1.0-<h24>-<h146>\n", "k v1.0-<h24>-<h100>\n"),
        s!("gitlab-cicd-job-token", "k glcbt-<a3>_<w20>\n", "k glcbt-<a3>_<w10>\n"),
        s!("gitlab-feed-token", "k glft-<w20>\n", "k glft-<w10>\n"),
        s!("gitlab-incoming-mail-token", "k glimt-<w25>\n", "k glimt-<w15>\n"),
        s!("gitlab-kubernetes-agent-token", "k glagent-<w50>\n", "k glagent-<w30>\n"),
        s!("gitlab-oauth-app-secret", "k gloas-<w64>\n", "k gloas-<w40>\n"),
        s!("gitlab-scim-token", "k glsoat-<w20>\n", "k glsoat-<w10>\n"),
        s!("gitlab-feature-flag-client-token", "k glffct-<w20>\n", "k glffct-<w10>\n"),
        s!("bearer-token", "Authorization: Bearer <a40>\n", "Authorization: Bearer abcabcabcabcabcabcabcabcabc\n"),
        s!("basic-auth-header", "Authorization: Basic <b24>\n", "Authorization: Basic dXNlcg==\n"),
    ]
}

/// Builds a planted corpus: `count` lines of filler code with a generated credential (one per
/// default rule, round robin) every `every` lines. Returns the text and the rule ids planted
/// (in order).
pub fn planted_corpus(seed: u64, count: usize) -> (String, Vec<&'static str>) {
    let mut rng = Rng::new(seed);
    let samples = samples();
    let mut text = String::new();
    let mut planted = Vec::new();
    for i in 0..count {
        let s = &samples[i % samples.len()];
        text.push_str("fn handler_");
        text.push_str(&i.to_string());
        text.push_str("() { let cfg = load(); }\n// config follows\n");
        text.push_str(&s.positive(&mut rng));
        text.push('\n');
        planted.push(s.rule_id);
    }
    (text, planted)
}

//! The registry's page for people: one HTML table, readable without JavaScript, refreshing
//! itself. Every value that came from a client is escaped.

use common::html::escape;
use common::wire::{Endpoint, Status};
use std::fmt::Write;

/// Seconds between the page's own refreshes when JavaScript is off.
const REFRESH_SECONDS: u32 = 5;

/// Holds a blocking query for the next change and swaps in the new table; without JavaScript
/// the page refreshes itself instead (the `noscript` meta tag).
const LIVE_SCRIPT: &str = r#"<script>
(function () {
  var main = document.getElementById("registry");
  function next() {
    fetch("/?index=" + main.dataset.index + "&wait=30s", {cache: "no-store"})
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("registry");
        main.replaceWith(fresh);
        main = fresh;
        next();
      })
      .catch(function () { setTimeout(next, 2000); });
  }
  next();
})();
</script>
"#;

/// Renders the page for `endpoints` (sorted by Name) as of watch index `index`, with `banner`
/// above the table when the registry has something to warn about.
pub fn render(endpoints: &[Endpoint], index: u64, version: &str, banner: Option<&str>) -> String {
    let mut counts = [0usize; 3];
    for e in endpoints {
        counts[e.status.index()] += 1;
    }
    let mut html = String::with_capacity(1024 + endpoints.len() * 320);
    head(&mut html, counts, index, banner);
    for e in endpoints {
        row(&mut html, e);
    }
    tail(&mut html, counts, version);
    html
}

/// The page up to its first row: `counts` per status, in [`Status::ALL`] order, are those of
/// the rows that follow. A page rendered in pieces is [`head`], every [`row`], then [`tail`].
pub fn head(html: &mut String, counts: [usize; 3], index: u64, banner: Option<&str>) {
    let _ = write!(
        html,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS}"></noscript>
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Service Registry</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse;width:100%}}
th,td{{text-align:left;padding:.3em .8em;border-bottom:1px solid #ddd;vertical-align:top}}
.passing{{color:#1a7f37;font-weight:bold}}.pending{{color:#9a6700;font-weight:bold}}.critical{{color:#cf222e;font-weight:bold}}
.banner{{background:#fff8c5;border:1px solid #d4a72c;padding:.6em 1em}}
.counts span{{margin-right:1.5em}} .error{{color:#666;font-size:.9em}} footer{{margin-top:2em;color:#888;font-size:.8em}}
</style>
</head>
<body>
<h1>Service Registry</h1>
<main id="registry" data-index="{index}">
"#
    );
    if let Some(banner) = banner {
        let _ = writeln!(html, r#"<p class="banner" role="alert">{}</p>"#, escape(banner));
    }
    html.push_str(r#"<p class="counts">"#);
    for (status, count) in Status::ALL.iter().zip(counts) {
        let _ = write!(html, r#"<span class="{status}">{count} {status}</span>"#);
    }
    let total: usize = counts.iter().sum();
    let _ = writeln!(html, "<span>{total} in all</span></p>");
    if total == 0 {
        html.push_str("<p>No endpoints registered yet. Instances register with <code>POST /register</code> on the API port.</p>\n");
    } else {
        html.push_str("<table>\n<thead><tr><th>Name</th><th>Address</th><th>Status</th><th>Tags</th><th>Last check</th><th>Last error</th></tr></thead>\n<tbody>\n");
    }
}

/// One endpoint's row of the table.
pub fn row(html: &mut String, e: &Endpoint) {
    let address = escape(&e.address);
    let tags = escape(&e.tags.join(", "));
    let _ = writeln!(
        html,
        r#"<tr><td>{}</td><td><a href="http://{address}/">{address}</a></td><td class="{status}">{status}</td><td>{tags}</td><td>{}</td><td class="error">{}</td></tr>"#,
        escape(&e.name),
        escape(e.last_check.as_deref().unwrap_or("never")),
        escape(e.last_error.as_deref().unwrap_or("")),
        status = e.status,
    );
}

/// The page after its last row; `counts` as given to [`head`].
pub fn tail(html: &mut String, counts: [usize; 3], version: &str) {
    if counts.iter().sum::<usize>() > 0 {
        html.push_str("</tbody>\n</table>\n");
    }
    let _ = write!(
        html,
        "</main>\n<footer>service-registry {} &middot; JSON at <a href=\"/endpoints\">/endpoints</a> &middot; updates live \
         (every {REFRESH_SECONDS}s without JavaScript)</footer>\n{LIVE_SCRIPT}</body>\n</html>\n",
        escape(version)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(name: &str, status: Status, tags: &[&str], error: Option<&str>) -> Endpoint {
        Endpoint {
            name: name.into(),
            address: "10.0.0.1:8080".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            status,
            registered_at: "2017-02-03T20:37:38.000Z".into(),
            last_check: Some("2017-02-03T20:37:39.000Z".into()),
            last_error: error.map(str::to_string),
            consecutive_failures: 0,
            expires_at: None,
        }
    }

    #[test]
    fn escapes_everything_a_client_sent() {
        let html = render(
            &[endpoint("a", Status::Critical, &["<script>alert(1)</script>"], Some("\"><img src=x>"))],
            1,
            "1.0",
            None,
        );
        assert!(!html.contains("<script>alert(1)"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<img src=x>"));
        assert!(html.contains("&quot;&gt;&lt;img src=x&gt;"));
    }

    /// The golden file pins the page's structure; regenerate it with
    /// `UPDATE_GOLDEN=1 cargo test -p service-registry page` after a deliberate change; never
    /// under CI, where rewriting the file would make the comparison compare it with itself.
    #[test]
    fn matches_the_golden_page() {
        let html = render(
            &[
                endpoint("alpha", Status::Passing, &["web", "eu"], None),
                endpoint("beta", Status::Critical, &[], Some("connection refused")),
                endpoint("gamma", Status::Pending, &["web"], None),
            ],
            42,
            "0.1.0",
            None,
        );
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/page.html");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            assert!(std::env::var_os("CI").is_none(), "UPDATE_GOLDEN is refused under CI: it would pass by definition");
            std::fs::write(path, &html).unwrap();
        }
        let golden = std::fs::read_to_string(path).expect("golden file");
        assert_eq!(html, golden);
        assert!(html.contains(r#"<span class="passing">1 passing</span><span class="pending">1 pending</span><span class="critical">1 critical</span>"#));
        assert!(html.contains(r#"<a href="http://10.0.0.1:8080/">10.0.0.1:8080</a>"#));
    }

    #[test]
    fn a_banner_is_shown_escaped_only_when_given() {
        let html = render(&[], 1, "0.1.0", Some("hold <b>"));
        assert!(html.contains(r#"<p class="banner" role="alert">hold &lt;b&gt;</p>"#), "{html}");
        assert!(!render(&[], 1, "0.1.0", None).contains("class=\"banner\""));
    }

    #[test]
    fn an_empty_registry_says_how_to_register() {
        assert!(render(&[], 1, "0.1.0", None).contains("POST /register"));
    }
}

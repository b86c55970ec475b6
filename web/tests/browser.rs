//! End to end in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `.ci/test`) driven through WebDriver by
//! Python's selenium (PyPI, installed by `.ci/test`) against the real server on
//! loopback. Search, sort, page, open a torrent, expand the file tree, check the
//! magnet link's target and the `.torrent` download, read the dashboard; the
//! hostile names render as text and no script runs (checked in the DOM). A
//! screenshot of each page is saved under `target/tmp/browser/`.

mod common;

use std::process::Command;

use common::*;
use magnetar_storage::{magnet_of, to_hex};
use magnetar_web::Access;

const DRIVER: &str = r#"
import hashlib, json, os, sys, urllib.request
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

cfg = json.loads(sys.argv[1])
base, out = cfg["base"], cfg["out"]
opts = webdriver.ChromeOptions()
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--window-size=1200,900", "--no-first-run", "--disable-extensions"]:
    opts.add_argument(a)
opts.binary_location = cfg["chromium"]
d = webdriver.Chrome(service=Service(cfg["chromedriver"]), options=opts)
d.set_page_load_timeout(30)

def shot(name):
    d.save_screenshot(os.path.join(out, name + ".png"))

def no_alert(where):
    try:
        a = d.switch_to.alert
        raise AssertionError(f"{where}: an alert opened: {a.text!r}")
    except NoAlertPresentException:
        pass

def rows():
    return d.find_elements(By.CSS_SELECTOR, "tbody tr")

def first_name():
    return rows()[0].find_element(By.CSS_SELECTOR, "td.name a").text

try:
    d.get(base + "/")
    assert "magnetar" in d.title, d.title
    shot("home")
    box = d.find_element(By.NAME, "q")
    box.send_keys("ubuntu")
    box.submit()
    assert "1–50 of 60 matches" in d.page_source, "search summary"
    assert len(rows()) == 50, len(rows())
    shot("search")
    # Sort by size: first click descending, second ascending.
    d.find_element(By.LINK_TEXT, "Size").click()
    assert "sort=size" in d.current_url, d.current_url
    assert first_name().startswith("ubuntu 59 "), first_name()
    d.find_element(By.PARTIAL_LINK_TEXT, "Size").click()
    assert "order=asc" in d.current_url, d.current_url
    assert first_name().startswith("ubuntu 00 "), first_name()
    # Page on.
    d.find_element(By.PARTIAL_LINK_TEXT, "Next").click()
    assert "51–60 of 60 matches" in d.page_source
    assert len(rows()) == 10
    assert first_name().startswith("ubuntu 50 "), first_name()

    # Hostile names: text, not markup, and nothing runs.
    d.get(base + "/search?q=hostile")
    no_alert("hostile search")
    names = sorted(a.text for a in d.find_elements(By.CSS_SELECTOR, "td.name a"))
    assert names == sorted(cfg["hostile_rendered"]), names
    assert d.execute_script("return document.scripts.length") == 0
    assert len(d.find_elements(By.TAG_NAME, "img")) == 0
    assert len(d.find_elements(By.CSS_SELECTOR, "svg[onload]")) == 0
    shot("hostile")
    for a in d.find_elements(By.CSS_SELECTOR, "td.name a"):
        href = a.get_attribute("href")
        d2 = href
    d.get(d2)
    no_alert("hostile torrent page")
    assert d.execute_script("return document.scripts.length") == 0
    assert len(d.find_elements(By.TAG_NAME, "img")) == 0
    shot("hostile-torrent")

    # A torrent: fields, the tree, the magnet target, the .torrent.
    d.get(base + "/search?q=tree")
    d.find_element(By.LINK_TEXT, "tree album").click()
    assert cfg["tree_hex"] in d.page_source
    dirs = d.find_elements(By.CSS_SELECTOR, "ul.files details")
    assert len(dirs) == 3, len(dirs)
    booklet = [li for li in d.find_elements(By.CSS_SELECTOR, "li") if li.get_attribute("textContent").startswith("booklet.pdf")]
    assert booklet and not booklet[0].is_displayed(), "booklet should be hidden before expanding"
    for det in dirs:
        if not det.get_attribute("open"):
            det.find_element(By.TAG_NAME, "summary").click()
    assert all(det.get_attribute("open") is not None for det in dirs)
    assert booklet[0].is_displayed(), "booklet visible after expanding"
    shot("torrent")
    magnet = d.find_element(By.LINK_TEXT, "Magnet link").get_attribute("href")
    assert magnet == cfg["tree_magnet"], (magnet, cfg["tree_magnet"])
    tfile = d.find_element(By.PARTIAL_LINK_TEXT, ".torrent file").get_attribute("href")
    body = urllib.request.urlopen(tfile, timeout=10).read()
    assert body.startswith(b"d4:info") and body.endswith(b"e")
    assert hashlib.sha1(body[7:-1]).hexdigest() == cfg["tree_hex"]

    d.get(base + "/recent")
    assert len(rows()) == 50
    shot("recent")
    d.get(base + "/stats")
    assert len(d.find_elements(By.CSS_SELECTOR, "svg.chart")) >= 3
    assert "Torrents discovered per hour" in d.page_source
    shot("stats")
    # A phone-sized window.
    d.set_window_size(390, 844)
    d.get(base + "/search?q=ubuntu")
    width = d.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390, f"the search page scrolls sideways on a phone: {width}px"
    shot("search-phone")
    no_alert("end")
finally:
    d.quit()
print("ok")
"#;

#[test]
fn browser_end_to_end() {
    let f = fixture();
    add_activity(&f.store, magnetar_web::index::now_secs());
    let s = start(f.store.clone(), Access::Open, test_limits());
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&out).unwrap();
    let tree = f.record("tree album");
    // A browser shows the names as text, exactly (control characters included).
    let hostile: Vec<String> = HOSTILE.iter().map(|h| h.trim().to_string()).collect();
    let cfg = serde_json::json!({
        "base": format!("http://{}", s.addr),
        "out": out,
        "chromium": "/usr/bin/chromium",
        "chromedriver": "/usr/bin/chromedriver",
        "tree_hex": to_hex(&tree.infohash),
        "tree_magnet": magnet_of(&tree),
        "hostile_rendered": hostile,
    });
    let r = Command::new("python3")
        .arg("-c")
        .arg(DRIVER)
        .arg(cfg.to_string())
        .output()
        .expect("python3 with selenium (.ci/test installs it)");
    assert!(
        r.status.success(),
        "browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    for name in [
        "home",
        "search",
        "hostile",
        "hostile-torrent",
        "torrent",
        "recent",
        "stats",
        "search-phone",
    ] {
        let p = out.join(format!("{name}.png"));
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "no screenshot {}", p.display());
    }
}

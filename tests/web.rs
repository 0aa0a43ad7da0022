//! The web page in headless Chromium (filled in with the page).

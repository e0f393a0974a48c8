// Package browser holds the real browser test (browser_test.go): Debian's
// classic Notebook 6 on loopback and headless Chromium, driven through
// selenium (testdata/drive.py) as a user would, on the ferry kernel with a
// stand-in cloud (--local-remote). It covers what only a browser shows:
// a plot's <img>, a traceback, typing into input(), a pinned cloud cell,
// an ipywidget's slider, the toolbar's interrupt, Restart (the Notebook
// must not call the kernel dead, issue 17) and a cell after it, and
// shutting the kernel down with every process gone.
//
// Run it alone with
//
//	go test -count=1 -run TestBrowser ./internal/browser
//
// FERRY_ARTIFACTS=DIR keeps a failed run's screenshots there.
package browser

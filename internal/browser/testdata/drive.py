"""Drives the classic Notebook (6) in headless Chromium through selenium, as
a user would: log in, open a notebook on the ferry kernel, run its cells
from the toolbar, type into input(), interrupt, restart and shut down.

Run by browser_test.go, which starts the notebook server:

    drive.py URL TOKEN_FILE NOTEBOOK_DIR PROFILE_DIR ARTIFACTS_DIR

Each step prints one JSON line {"step", "ok", "secs", "detail"}; a failed
step leaves ARTIFACTS_DIR/NN-step.png (and the page's text) behind. Steps
after a failure still run when they can, so one run shows every problem;
a step the rest depends on (login, the kernel starting) ends the run.
Every wait is bounded (WebDriverWait with a timeout), none is a sleep.
"""

import json
import os
import sys
import time
import traceback

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

URL, TOKEN_FILE, NB_DIR, PROFILE, ARTIFACTS = sys.argv[1:6]
NOTEBOOK = "browser.ipynb"

# The notebook's cells, by name; the steps below run them by index.
CELLS = [
    ("laptop", "import os\nprint('laptop pid', os.getpid())"),
    ("plot", "%matplotlib inline\nimport matplotlib.pyplot as plt\n"
             "plt.plot([1, 3, 2])\nplt.title('ferry plot')\nplt.show()"),
    ("error", "def boom():\n    return 1 / 0\n\nboom()"),
    ("input", "name = input('your name? ')\nprint('hello, ' + name)"),
    ("remote", "%%ferry remote\nimport os\nprint('cloud pid', os.getpid(), 'sees', name)"),
    ("why", "%ferry why"),
    ("widget", "import ipywidgets as widgets\n"
               "slider = widgets.IntSlider(value=7, min=0, max=10, description='ferry')\nslider"),
    ("sleep", "import time\nprint('sleeping')\ntime.sleep(60)"),
    ("after_interrupt", "print('after interrupt', name)"),
    ("after_restart", "print('after restart', 'name' in globals(), 6 * 7)"),
]
INDEX = {name: i for i, (name, _) in enumerate(CELLS)}

failed = False


def report(step, ok, secs, detail=""):
    print(json.dumps({"step": step, "ok": ok, "secs": round(secs, 2), "detail": detail}), flush=True)


def write_notebook():
    nb = {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "ferry", "display_name": "Python 3 (Ferry)", "language": "python"},
                     "language_info": {"name": "python"}},
        "cells": [{"cell_type": "code", "id": name.replace("_", "-"), "metadata": {}, "execution_count": None,
                   "outputs": [], "source": src} for name, src in CELLS],
    }
    with open(os.path.join(NB_DIR, NOTEBOOK), "w") as f:
        json.dump(nb, f, indent=1)


def start_browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--user-data-dir=" + PROFILE, "--window-size=1280,1600", "--no-first-run",
              "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--metrics-recording-only"]:
        opts.add_argument(a)
    # No driver log: it would hold the token typed into the login page,
    # one character at a time, where no redaction finds it.
    svc = Service("/usr/bin/chromedriver", service_args=["--log-level=OFF"])
    return webdriver.Chrome(service=svc, options=opts)


class StepFailed(Exception):
    pass


def wait(drv, what, timeout, cond):
    """Waits up to timeout seconds for cond(drv) to be truthy; fails the
    step naming what it waited for."""
    try:
        return WebDriverWait(drv, timeout, poll_frequency=0.1).until(lambda d: cond(d))
    except TimeoutException:
        raise StepFailed("%s did not happen within %ss" % (what, timeout))


def js(drv, script, *args):
    return drv.execute_script(script, *args)


def cell_state(drv, i):
    """The cell's prompt number (None, '*' or an int), its outputs as the
    notebook holds them, and the text the user sees in its output area."""
    return js(drv, """
        var c = Jupyter.notebook.get_cell(arguments[0]);
        return {prompt: c.input_prompt_number === undefined ? null : c.input_prompt_number,
                outputs: c.output_area.outputs,
                text: c.output_area.element.text()};""", i)


def run_cell(drv, name):
    """Selects the cell and clicks the toolbar's Run button, as a user does;
    waits until the cell shows it is running (or ran)."""
    i = INDEX[name]
    js(drv, "Jupyter.notebook.select(arguments[0]); Jupyter.notebook.command_mode();", i)
    drv.find_element(By.CSS_SELECTOR, 'button[data-jupyter-action="jupyter-notebook:run-cell-and-select-next"]').click()
    wait(drv, "cell %r starting" % name, 10, lambda d: cell_state(d, i)["prompt"] is not None)
    return i


def finished(drv, i):
    s = cell_state(drv, i)
    return s if isinstance(s["prompt"], int) else None


def run_and_wait(drv, name, timeout):
    i = run_cell(drv, name)
    return wait(drv, "cell %r finishing" % name, timeout, lambda d: finished(d, i))


def cell_el(drv, i):
    return js(drv, "return Jupyter.notebook.get_cell(arguments[0]).element[0];", i)


def kernel_status(drv):
    return js(drv, "var i = document.getElementById('kernel_indicator_icon'); return i ? i.className : '';")


def dead_signs(drv):
    """What would tell a user the kernel died: kernel_dead events, the
    'Dead kernel' notification or dialog, the dead indicator."""
    return js(drv, """
        var signs = (window.__ferryEvents || []).filter(function (e) { return /dead/.test(e); });
        var n = document.getElementById('notification_kernel');
        if (n && /Dead kernel/.test(n.textContent)) signs.push('notification: ' + n.textContent.trim());
        document.querySelectorAll('.modal').forEach(function (m) {
            if (/died|Dead kernel/.test(m.textContent)) signs.push('dialog: ' + m.textContent.trim().replace(/\\s+/g, ' '));
        });
        var i = document.getElementById('kernel_indicator_icon');
        if (i && /dead/.test(i.className)) signs.push('indicator: ' + i.className);
        return signs;""")


def shoot(drv, n, step):
    base = os.path.join(ARTIFACTS, "%02d-%s" % (n, step))
    try:
        drv.save_screenshot(base + ".png")
        with open(base + ".txt", "w") as f:
            f.write(drv.find_element(By.TAG_NAME, "body").text)
            f.write("\n\nevents: %s\n" % js(drv, "return window.__ferryEvents || [];"))
        return base + ".png"
    except WebDriverException as e:
        return "no screenshot (%s)" % e.msg


# ---- the steps ----


def login(drv):
    # The token is typed into the login page, so it is in no URL, argv or log.
    with open(TOKEN_FILE) as f:
        token = f.read().strip()
    drv.get(URL + "login?next=%2Fnotebooks%2F" + NOTEBOOK)
    box = wait(drv, "the login page", 20, lambda d: d.find_elements(By.ID, "password_input"))[0]
    box.send_keys(token)
    drv.find_element(By.ID, "login_submit").click()
    wait(drv, "the notebook page after logging in", 30, lambda d: js(d, "return !!(window.Jupyter && Jupyter.notebook);"))


def open_notebook(drv):
    wait(drv, "the Notebook creating its kernel session", 30, lambda d: js(d, "return !!Jupyter.notebook.kernel;"))
    # Record the kernel's events from here on: a kernel_dead at any time is
    # what issue 17's restart bug looked like.
    js(drv, """
        window.__ferryEvents = [];
        ['kernel_dead.Kernel', 'kernel_dead.Session', 'kernel_killed.Session', 'kernel_restarting.Kernel',
         'kernel_autorestarting.Kernel', 'kernel_ready.Kernel', 'kernel_disconnected.Kernel',
         'kernel_connection_failed.Kernel', 'kernel_failed_restart.Kernel', 'kernel_created.Session'].forEach(function (e) {
            Jupyter.notebook.events.on(e, function () { window.__ferryEvents.push(e); });
        });
        // And what the kernel said that the Notebook reads as death: a
        // shutdown_reply on IOPub without restart, a 'dead' status.
        var k = Jupyter.notebook.kernel;
        ['shutdown_reply', 'status'].forEach(function (t) {
            var orig = k.get_iopub_handler(t);
            k.register_iopub_handler(t, function (msg) {
                if (t === 'shutdown_reply' || msg.content.execution_state === 'dead')
                    window.__ferryEvents.push('iopub ' + t + ' ' + JSON.stringify(msg.content) +
                        ' (parent ' + (msg.parent_header.msg_type || 'none') + ')');
                return orig(msg);
            });
        });""")
    wait(drv, "the ferry kernel starting (kernel idle, ready)", 60,
         lambda d: js(d, "return !!(Jupyter.notebook.kernel && Jupyter.notebook.kernel.info_reply && Jupyter.notebook.kernel.info_reply.status === 'ok');")
         and "kernel_idle_icon" in kernel_status(d))
    name = js(drv, "return Jupyter.notebook.kernel.name;")
    if name != "ferry":
        raise StepFailed("the notebook runs kernel %r, want ferry" % name)


def step_laptop(drv):
    s = run_and_wait(drv, "laptop", 60)
    if "laptop pid" not in s["text"]:
        raise StepFailed("printed %r, want 'laptop pid N'" % s["text"])
    return s["text"].strip()


def step_plot(drv):
    i = INDEX["plot"]
    run_and_wait(drv, "plot", 60)
    img = wait(drv, "an <img> in the plot cell's output", 10,
               lambda d: cell_el(d, i).find_elements(By.CSS_SELECTOR, ".output_png img"))[0]
    src = img.get_attribute("src") or ""
    w = js(drv, "return arguments[0].naturalWidth;", img)
    if not src.startswith("data:image/png;base64,") or not w or w < 100:
        raise StepFailed("the plot's <img> has src %r… and width %r, want a PNG at least 100 px wide" % (src[:40], w))
    return "img %d px wide" % w


def step_error(drv):
    i = INDEX["error"]
    s = run_and_wait(drv, "error", 30)
    err = cell_el(drv, i).find_elements(By.CSS_SELECTOR, ".output_error")
    text = err[0].text if err else ""
    for want in ["ZeroDivisionError", "Traceback", "boom()", "1 / 0"]:
        if want not in text:
            raise StepFailed("the error output lacks %r; shows %r" % (want, text or s["text"]))
    return "traceback shown"


def step_input(drv):
    i = run_cell(drv, "input")
    box = wait(drv, "the input() box", 30,
               lambda d: cell_el(d, i).find_elements(By.CSS_SELECTOR, "input.raw_input"))[0]
    prompt = cell_el(drv, i).find_element(By.CSS_SELECTOR, ".raw_input_prompt").text
    if "your name?" not in prompt:
        raise StepFailed("the input box's prompt is %r" % prompt)
    box.send_keys("Ada")
    box.send_keys(Keys.ENTER)
    s = wait(drv, "the input() cell finishing", 30, lambda d: finished(d, i))
    if "hello, Ada" not in s["text"]:
        raise StepFailed("printed %r, want 'hello, Ada'" % s["text"])
    return s["text"].strip().replace("\n", " | ")


def step_remote(drv):
    s = run_and_wait(drv, "remote", 90)
    laptop = cell_state(drv, INDEX["laptop"])["text"].split()
    words = s["text"].split()
    if "cloud pid" not in s["text"] or "sees Ada" not in s["text"] or s["outputs"] and any(o.get("output_type") == "error" for o in s["outputs"]):
        raise StepFailed("the pinned cell printed %r, want 'cloud pid N sees Ada'" % s["text"])
    if len(laptop) >= 3 and len(words) >= 3 and laptop[2] == words[2]:
        raise StepFailed("the pinned cell ran in the laptop's process (pid %s)" % words[2])
    w = run_and_wait(drv, "why", 30)
    if "ran at remote" not in w["text"] or "pinned" not in w["text"]:
        raise StepFailed("%%ferry why after the pinned cell says %r, want it ran at remote, pinned" % w["text"])
    return s["text"].strip() + "; why: " + w["text"].strip().replace("\n", " | ")


def step_widget(drv):
    i = INDEX["widget"]
    run_and_wait(drv, "widget", 60)
    # ipywidgets 6 renders an IntSlider as .widget-hslider with a jQuery UI
    # slider and a readout; the view must have rendered, not the text repr.
    el = wait(drv, "the slider rendering", 20,
              lambda d: cell_el(d, i).find_elements(By.CSS_SELECTOR, ".widget-area .widget-hslider"))[0]
    wait(drv, "the slider's handle and readout", 10,
         lambda d: el.find_elements(By.CSS_SELECTOR, ".ui-slider-handle") and "7" in el.text)
    if "ferry" not in el.text:
        raise StepFailed("the slider shows %r, want its description 'ferry' and value 7" % el.text)
    return "slider shows %r" % el.text.replace("\n", " ")


def step_interrupt(drv):
    i = run_cell(drv, "sleep")
    wait(drv, "the sleep cell printing and the kernel busy", 30,
         lambda d: "sleeping" in cell_state(d, i)["text"] and "kernel_busy_icon" in kernel_status(d))
    t0 = time.monotonic()
    drv.find_element(By.CSS_SELECTOR, 'button[data-jupyter-action="jupyter-notebook:interrupt-kernel"]').click()
    s = wait(drv, "the interrupted cell finishing", 20, lambda d: finished(d, i))
    took = time.monotonic() - t0
    if "KeyboardInterrupt" not in s["text"]:
        raise StepFailed("the interrupted cell shows %r, want KeyboardInterrupt" % s["text"])
    a = run_and_wait(drv, "after_interrupt", 30)
    if "after interrupt Ada" not in a["text"]:
        raise StepFailed("the cell after the interrupt printed %r, want 'after interrupt Ada'" % a["text"])
    return "KeyboardInterrupt %.1fs after the click; kernel goes on" % took


def step_restart(drv):
    js(drv, "window.__ferryEvents = [];")
    drv.find_element(By.CSS_SELECTOR, 'button[data-jupyter-action="jupyter-notebook:confirm-restart-kernel"]').click()
    btn = wait(drv, "the restart dialog", 10,
               lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, ".modal-dialog .modal-footer button") if b.text == "Restart"])[0]
    btn.click()
    # Ready again: the restart's kernel_ready after kernel_restarting, an
    # idle indicator, and no sign of a dead kernel meanwhile.
    def ready(d):
        signs = dead_signs(d)
        if signs:
            raise StepFailed("after Restart the Notebook shows a dead kernel: %s" % "; ".join(signs))
        ev = js(d, "return window.__ferryEvents;")
        return "kernel_restarting.Kernel" in ev and "kernel_ready.Kernel" in ev[ev.index("kernel_restarting.Kernel"):] \
            and "kernel_idle_icon" in kernel_status(d)
    wait(drv, "the kernel ready after Restart", 60, ready)
    s = run_and_wait(drv, "after_restart", 60)
    signs = dead_signs(drv)
    if signs:
        raise StepFailed("after Restart the Notebook shows a dead kernel: %s" % "; ".join(signs))
    if "after restart False 42" not in s["text"] or s["prompt"] != 1:
        raise StepFailed("the first cell after Restart shows In [%s] and %r, want In [1] and 'after restart False 42' (a new kernel)" % (s["prompt"], s["text"]))
    return "events %s; then %r" % (js(drv, "return window.__ferryEvents;"), s["text"].strip())


def server_kernels(drv):
    return drv.execute_async_script("""
        var done = arguments[arguments.length - 1];
        fetch(Jupyter.notebook.base_url + 'api/kernels', {credentials: 'same-origin'})
            .then(function (r) { return r.json(); }).then(done, function (e) { done('error: ' + e); });""")


def dismiss_dialogs(drv):
    """Closes dialogs an earlier failed step left open (a Dead kernel
    dialog would block the menu), so this step tests what it is for."""
    for close in drv.find_elements(By.CSS_SELECTOR, ".modal .modal-header button.close"):
        if close.is_displayed():
            close.click()
    wait(drv, "open dialogs closing", 10,
         lambda d: not [m for m in d.find_elements(By.CSS_SELECTOR, ".modal") if m.is_displayed()])


def step_shutdown(drv):
    dismiss_dialogs(drv)
    js(drv, "window.__ferryEvents = [];")
    drv.find_element(By.ID, "kernellink").click()
    wait(drv, "the Kernel menu", 10, lambda d: d.find_element(By.ID, "shutdown_kernel").is_displayed())
    connected = js(drv, "return Jupyter.notebook.kernel.is_connected();")
    drv.find_element(By.CSS_SELECTOR, "#shutdown_kernel > a").click()
    if connected:  # the Notebook asks only when a kernel is connected
        btn = wait(drv, "the shutdown dialog", 10,
                   lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, ".modal-dialog .modal-footer button") if b.text == "Shutdown"])[0]
        btn.click()
    # Done when the server runs no kernel (asked as the page, with its
    # cookie); the Notebook says so when it had a kernel connected.
    wait(drv, "the server running no kernel", 30, lambda d: server_kernels(d) == [])
    if connected:
        wait(drv, "the Notebook showing 'No kernel'", 10,
             lambda d: "kernel_killed.Session" in js(d, "return window.__ferryEvents;")
             and "No kernel" in d.find_element(By.ID, "notification_kernel").text)
    return "events %s" % js(drv, "return window.__ferryEvents;")


STEPS = [
    ("laptop", step_laptop), ("plot", step_plot), ("error", step_error), ("input", step_input),
    ("remote", step_remote), ("widget", step_widget), ("interrupt", step_interrupt),
    ("restart", step_restart), ("shutdown", step_shutdown),
]


def attempt(drv, n, name, fn):
    global failed
    t0 = time.monotonic()
    try:
        detail = fn(drv) or ""
        report(name, True, time.monotonic() - t0, detail)
        return True
    except Exception as e:
        failed = True
        msg = str(e) if isinstance(e, StepFailed) else traceback.format_exc(limit=3)
        report(name, False, time.monotonic() - t0, "%s; screenshot %s" % (msg, shoot(drv, n, name)))
        return False


def main():
    write_notebook()
    t0 = time.monotonic()
    try:
        drv = start_browser()
    except Exception as e:
        report("browser", False, time.monotonic() - t0, "starting chromium through chromedriver: %s" % e)
        return 1
    report("browser", True, time.monotonic() - t0, drv.capabilities.get("browserVersion", ""))
    try:
        drv.set_script_timeout(10)
        drv.set_page_load_timeout(30)
        if not attempt(drv, 0, "login", login) or not attempt(drv, 1, "open", open_notebook):
            return 1
        for n, (name, fn) in enumerate(STEPS, 2):
            attempt(drv, n, name, fn)
    finally:
        drv.quit()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

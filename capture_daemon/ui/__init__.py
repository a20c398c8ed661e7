"""`capture-daemon ui`: a local web dashboard over the store, the daemon and training runs.

app.py holds the routes and the guards (loopback, token, CSRF); api.py turns the store, the
daemon's status and run folders into JSON; static/ is the page (plain HTML, JS and CSS, no build
step, no CDN). Needs the `ui` extra (starlette, uvicorn), not the training stack.
"""

"""The web dashboard: a page app served by the API itself at `/ui` (plain JavaScript, no build
step, no CDN: every asset is package data of `api.ui`, served by `api.ui.routes`)."""

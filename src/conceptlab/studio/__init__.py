"""conceptlab studio: the whole workflow in a local web app (Gradio), a thin layer over the library.

`workspace` (the folder it works in), `jobs` (training as separate CLI processes), `progress` (reading a
run as it trains), `library` (the learned concepts), `actions` (what each button calls), `app` (the page).
"""

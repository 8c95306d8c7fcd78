FLASK_APP=microblog.py
# `flask` commands run in debug mode with development defaults on a fresh checkout.
# A deployment sets FLASK_DEBUG=0 in .env (which wins over this file).
FLASK_DEBUG=1

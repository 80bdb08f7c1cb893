# The compiled hot path (shmsession/_hot.c); see _build.py.

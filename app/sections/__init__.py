"""The dashboard pages run by app/main.py through st.navigation (a package, so a wheel carries them)."""

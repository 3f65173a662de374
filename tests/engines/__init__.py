"""Browser engines beyond Chromium for the tests: Firefox ESR over WebDriver BiDi
(``firefox.py``) and WebKitGTK's MiniBrowser over WebDriver (``webkit.py``), both
from Debian packages and never downloaded, with one small page interface
(``page.py``) so that a test reads the same in every engine."""

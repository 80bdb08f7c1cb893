"""Framework adapters, one module per framework, each imported by its path
(``shmsession.contrib.django`` ...) so that ``import shmsession`` needs no framework.
They translate a framework's vocabulary into the store's calls and hold no storage logic."""

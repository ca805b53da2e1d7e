"""What the tests share: the fixture plugin for servers and clusters (``servers``), the
clusters themselves (``cluster``) and the one way of waiting for a condition (``waiting``)."""

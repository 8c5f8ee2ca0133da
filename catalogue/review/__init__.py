"""The review server: a page for one reviewer on the loopback address (``server``, ``review.html``), its guard
against other pages in that reviewer's browser (``guard``: token, origin, host and body checks; ``slow_clients``),
the queue of proposals it serves (``queue``) and the keypoint-match pictures it draws (``pictures``). Every request
is validated before the store (``records``) writes; what it shows of a decision comes from ``deciding``."""

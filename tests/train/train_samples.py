"""Small Python files used as a training corpus in the trainer tests."""

SAMPLE_FILES = {
    "a.py": '''import os


def join_all(parts):
    """Join path parts."""
    out = ""
    for part in parts:
        if not part:
            continue
        out = os.path.join(out, part)
    return out


class Counter:
    def __init__(self, start=0):
        self.value = start

    def bump(self, by=1):
        self.value += by
        return self.value
''',
    "b.py": '''def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def is_even(n):
    return n % 2 == 0


if __name__ == "__main__":
    print([fib(i) for i in range(10)])
''',
    "pkg/c.py": '''from dataclasses import dataclass


@dataclass
class Point:
    x: float
    y: float

    def norm(self):
        return (self.x ** 2 + self.y ** 2) ** 0.5

    def scale(self, k):
        return Point(self.x * k, self.y * k)
''',
}

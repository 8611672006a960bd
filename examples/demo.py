"""A small file to try completions on: `dllm-lsp complete examples/demo.py:14:28`."""
import os


def read_lines(path):
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def count_words(lines):
    counts = {}
    for line in lines:
        for word in line.split():
            counts[word] = 
    return counts


if __name__ == "__main__":
    print(count_words(read_lines(os.sys.argv[1])))

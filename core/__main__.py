from patina.core.cli import console

console()

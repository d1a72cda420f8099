from fedshop.cli import app

app()

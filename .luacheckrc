std = "lua54"
max_line_length = 100
files["spec/**/*.lua"] = { std = "+busted" }
files["lua/spark-mock"] = {}
files["lua/spark-poll"] = {}

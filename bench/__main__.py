from bench.main import main

if __name__ == "__main__":  # a guard: multiprocessing's spawn re-imports the main module
    raise SystemExit(main())

def main(argv=None):
    print("secureml")

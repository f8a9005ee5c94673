"""gRPC stubs generated from proto/api.proto by generate_stubs.py at build time.

Only this file is committed; api_pb2.py, api_pb2.pyi and api_pb2_grpc.py are
generated (and git-ignored). Do not edit them: rebuild the package instead.
"""

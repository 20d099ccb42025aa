"""A gRPC client in another language: stubs generated from proto/ at test time with grpcio-tools,
then calls against a live command-api. Usage: python_client.py <proto dir> <host:port> <token>."""
import json
import os
import sys
import tempfile

import grpc
import grpc_tools
from grpc_tools import protoc

proto_root, address, token = sys.argv[1], sys.argv[2], sys.argv[3]
out = tempfile.mkdtemp(prefix="cairn-stubs-")
well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
status = protoc.main([
    "protoc", f"-I{proto_root}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}",
    "cairn/common/v1/common.proto", "cairn/user/v1/user.proto",
])
if status != 0:
    sys.exit(f"protoc failed with {status}")
sys.path.insert(0, out)
from cairn.user.v1 import user_pb2, user_pb2_grpc  # noqa: E402

stub = user_pb2_grpc.UserServiceStub(grpc.insecure_channel(address))
auth = [("authorization", f"Bearer {token}")]
created = stub.AddHumanUser(user_pb2.AddHumanUserRequest(
    user_name="py-user",
    profile=user_pb2.HumanProfile(
        name=user_pb2.Name(given_name="Guido", family_name="van Rossum"),
        emails=[user_pb2.Email(value="guido@example.com", primary=True)],
    ),
), metadata=auth)
read = stub.GetUser(user_pb2.GetUserRequest(user_id=created.user.id, min_position=created.details.position), metadata=auth)
try:
    stub.GetUser(user_pb2.GetUserRequest(user_id=created.user.id))
    unauthenticated = "no error"
except grpc.RpcError as error:
    unauthenticated = error.code().name
try:
    stub.AddHumanUser(user_pb2.AddHumanUserRequest(user_name=""), metadata=auth)
    invalid = "no error"
except grpc.RpcError as error:
    invalid = error.code().name
print(json.dumps({
    "id": created.user.id,
    "user_name": read.user.user_name,
    "family_name": read.user.human.name.family_name,
    "email": read.user.human.emails[0].value,
    "unauthenticated": unauthenticated,
    "invalid": invalid,
}))

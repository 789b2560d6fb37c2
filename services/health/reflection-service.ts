import {
  type DescExtension,
  type DescFile,
  type DescMessage,
  type DescService,
  toBinary,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ServiceImpl } from "@connectrpc/connect";
import { ServerReflection as ReflectionV1 } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ReflectionV1alpha } from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";

export { ReflectionV1, ReflectionV1alpha };

/** A request's question and the answer, as plain objects: the same in both versions. */
type Asked =
  | {
      case: "fileByFilename" | "fileContainingSymbol" | "allExtensionNumbersOfType" | "listServices";
      value: string;
    }
  | { case: "fileContainingExtension"; value: { containingType: string; extensionNumber: number } }
  | { case: undefined; value?: undefined };
type Answer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

/**
 * gRPC server reflection (grpc.reflection.v1, which grpcurl asks, and v1alpha, which ghz asks) over
 * `services` and every file they import, from the descriptors protobuf-es generated: no .proto or
 * protoset at run time. Both versions have the same messages under another package; one implementation
 * serves both, as connect-es builds each answer from the method's own output schema.
 */
export function createReflectionService(services: readonly DescService[]): {
  v1: ServiceImpl<typeof ReflectionV1>;
  v1alpha: ServiceImpl<typeof ReflectionV1alpha>;
} {
  const files = new Map<string, DescFile>();
  const symbols = new Map<string, DescFile>();
  const messageTypes = new Set<string>();
  const extensionsOf = new Map<string, DescExtension[]>();
  const addExtensions = (file: DescFile, extensions: DescExtension[]) => {
    for (const extension of extensions) {
      symbols.set(extension.typeName, file);
      const extendee = extension.extendee.typeName;
      extensionsOf.set(extendee, [...(extensionsOf.get(extendee) ?? []), extension]);
    }
  };
  const addMessages = (file: DescFile, messages: DescMessage[]) => {
    for (const message of messages) {
      symbols.set(message.typeName, file);
      messageTypes.add(message.typeName);
      for (const field of message.fields) symbols.set(`${message.typeName}.${field.name}`, file);
      for (const e of message.nestedEnums) symbols.set(e.typeName, file);
      addExtensions(file, message.nestedExtensions);
      addMessages(file, message.nestedMessages);
    }
  };
  const visit = (file: DescFile) => {
    if (files.has(file.proto.name)) return;
    files.set(file.proto.name, file);
    for (const dependency of file.dependencies) visit(dependency);
    addMessages(file, file.messages);
    addExtensions(file, file.extensions);
    for (const e of file.enums) symbols.set(e.typeName, file);
    for (const service of file.services) {
      symbols.set(service.typeName, file);
      for (const method of service.methods) symbols.set(`${service.typeName}.${method.name}`, file);
    }
  };
  for (const service of services) visit(service.file);

  const encoded = new Map(
    [...files.values()].map((file) => [file, toBinary(FileDescriptorProtoSchema, file.proto)]),
  );
  // The file asked for comes first, then everything it imports, as grpc-go answers: ghz (protoreflect)
  // takes the first descriptor as the answer and says "cannot find service" otherwise.
  const withImports = (file: DescFile, out: DescFile[] = []): DescFile[] => {
    if (!out.includes(file)) {
      out.push(file);
      for (const dependency of file.dependencies) withImports(dependency, out);
    }
    return out;
  };
  const fileAnswer = (file: DescFile | undefined, what: string): Answer =>
    file
      ? {
          case: "fileDescriptorResponse",
          value: { fileDescriptorProto: withImports(file).map((f) => encoded.get(f) as Uint8Array) },
        }
      : notFound(what);

  const answer = (request: Asked): Answer => {
    switch (request.case) {
      case "listServices":
        return {
          case: "listServicesResponse",
          value: { service: services.map((s) => ({ name: s.typeName })) },
        };
      case "fileByFilename":
        return fileAnswer(files.get(request.value), `file ${request.value}`);
      case "fileContainingSymbol":
        return fileAnswer(symbols.get(request.value.replace(/^\./, "")), `symbol ${request.value}`);
      case "fileContainingExtension": {
        const { containingType, extensionNumber } = request.value;
        const extension = extensionsOf.get(containingType)?.find((x) => x.number === extensionNumber);
        return fileAnswer(extension?.file, `extension ${extensionNumber} of ${containingType}`);
      }
      case "allExtensionNumbersOfType":
        return messageTypes.has(request.value)
          ? {
              case: "allExtensionNumbersResponse",
              value: {
                baseTypeName: request.value,
                extensionNumber: (extensionsOf.get(request.value) ?? []).map((x) => x.number),
              },
            }
          : notFound(`type ${request.value}`);
      default:
        return {
          case: "errorResponse",
          value: { errorCode: Code.InvalidArgument, errorMessage: "the request names nothing to reflect on" },
        };
    }
  };

  async function* serverReflectionInfo(requests: AsyncIterable<{ host: string; messageRequest: Asked }>) {
    for await (const { host, messageRequest } of requests) {
      yield {
        validHost: host,
        originalRequest: { host, messageRequest },
        messageResponse: answer(messageRequest),
      };
    }
  }
  return { v1: { serverReflectionInfo }, v1alpha: { serverReflectionInfo } };
}

function notFound(what: string): Answer {
  return { case: "errorResponse", value: { errorCode: Code.NotFound, errorMessage: `${what} not found` } };
}

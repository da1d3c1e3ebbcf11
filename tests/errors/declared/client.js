// A Node.js client of the order service: switches on ErrorInfo.reason with the enum pbjs
// generated from the API's protos. Usage: node client.js GENERATED_MODULE TARGET ORDER_ID
// Prints one JSON line: the branch taken, the code and the ErrorInfo fields.
'use strict';
const grpc = require('@grpc/grpc-js');
const [generatedModule, target, orderId] = process.argv.slice(2);
const root = require(generatedModule);
const { GetOrderRequest, GetOrderResponse, ErrorReason } = root.acme.orders.v1;
const { Status, ErrorInfo } = root.google.rpc;

const client = new grpc.Client(target, grpc.credentials.createInsecure());
client.makeUnaryRequest(
  '/acme.orders.v1.OrderService/GetOrder',
  (request) => Buffer.from(GetOrderRequest.encode(request).finish()),
  (bytes) => GetOrderResponse.decode(bytes),
  GetOrderRequest.create({ orderId }),
  (error) => {
    client.close();
    if (!error) {
      console.log(JSON.stringify({ branch: 'no error' }));
      return;
    }
    const [details] = error.metadata.get('grpc-status-details-bin');
    const status = Status.decode(details);
    const any = status.details.find((d) => (d.type_url ?? d.typeUrl).endsWith('/google.rpc.ErrorInfo'));
    const info = ErrorInfo.decode(any.value);
    let branch;
    switch (ErrorReason[info.reason]) { // the reason's name -> the generated enum's value
      case ErrorReason.ORDER_NOT_FOUND:
        branch = `not found: ${info.metadata.order_id}`;
        break;
      case ErrorReason.ORDER_LOCKED:
        branch = `locked: ${info.metadata.order_id}`;
        break;
      default:
        branch = `unknown reason ${info.reason}`;
    }
    console.log(JSON.stringify({ branch, code: error.code, message: status.message,
                                 reason: info.reason, domain: info.domain }));
  });

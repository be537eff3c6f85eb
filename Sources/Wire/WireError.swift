/// What the codec rejects. Every case is a malformed frame in the protocol's
/// terms (docs/protocol.md, "Framing"): the daemon replies with error code
/// `malformed` and closes the connection.
public enum WireError: Error, Equatable, Sendable {
    /// The bytes do not parse: the reason says where.
    case malformed(String)
    /// A frame header announcing more than the receiver accepts.
    case frameTooLarge(length: Int, limit: Int)
    /// A message type the codec does not know, with the request id so the
    /// daemon can answer `unknown-operation` and keep the connection.
    case unknownType(UInt16, request: UInt32)
}

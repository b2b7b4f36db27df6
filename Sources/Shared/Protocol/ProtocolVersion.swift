/// The wire protocol's version; a peer speaking another version is refused
/// at hello (see DESIGN.md, Wire protocol).
public enum ProtocolVersion {
    public static let current: UInt8 = 1
}
